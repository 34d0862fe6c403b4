//! The layout's rules, checked on the sources (ARCHITECTURE.md, Stages): dependencies between the
//! stages point one way, no two modules import each other, directly or in a ring, and every
//! pure module (no I/O) is mutation-tested or says why not, by a marker `cargo xtask mutants`
//! reads, which cannot lie about purity.
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

/// Every module's imports: (the path as written, the module it resolves to).
fn imports() -> BTreeMap<String, Vec<(String, String)>> {
    let modules = modules();
    let mut imports = BTreeMap::new();
    for (module, code) in &modules {
        let mut paths = Vec::new();
        // Comments say anything; code is what imports.
        let code = strip_comments(code);
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
        let mut targets = Vec::new();
        for path in paths {
            if let Some(target) = resolve(module, &path, &modules)
                && &target != module
                && !target.is_empty()
            {
                targets.push((path, target));
            }
        }
        imports.insert(module.clone(), targets);
    }
    imports
}

/// File-level edges: module → modules it uses.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    imports()
        .into_iter()
        .map(|(module, imports)| (module, imports.into_iter().map(|(_, target)| target).collect()))
        .collect()
}

/// Paths (a window of whole segments, anywhere in a path) that reach outside the process:
/// files, sockets, processes, the environment, clocks, the kernel. Naming one, or a module
/// of the crate that names one, makes a module not pure.
const IO: &[&str] = &[
    "std::fs",
    "std::process",
    "std::os",
    "std::env",
    "std::thread",
    "std::net::TcpListener",
    "std::net::TcpStream",
    "std::net::UdpSocket",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "std::io::IsTerminal",
    "std::time::Instant",
    "std::time::SystemTime",
    "Utc::now",
    // chrono's local time zone: the TZ variable and /etc/localtime.
    "Local",
    "tokio",
    "aya",
    "aya_log",
    "nix",
    "libc",
    "rtnetlink",
    "netlink_sys",
    "netlink_packet_route",
    "hyper",
    "hyper_util",
    "axum",
    "tonic",
    "k8s_cri",
    "indicatif",
    // The session file's own entry points (session/file.rs), called as `Session::load(...)`
    // or `session.save(...)`: what reads a file through them is not pure either.
    "Session::load",
    "load_as",
    "save",
];

/// Paths that contain an [`IO`] window but are plain data: the OTLP messages prost generated
/// (the crate's module is called `tonic`; with only `gen-tonic-messages` there is no
/// transport in it), and a parsed URL.
const NOT_IO: &[&str] = &["opentelemetry_proto::tonic", "hyper::Uri"];

/// The markers, each a line of the module's doc comment. `cargo xtask mutants` tests the
/// modules with one of the first two (xtask/src/mutants.rs, `MARKERS`).
const PURE: &str = "//! Pure: mutation-tested (cargo xtask mutants).";
/// Followed by why: what I/O, and why the unit tests still pin the logic down.
const TESTED_NOT_PURE: &str = "//! Mutation-tested (cargo xtask mutants), not pure:";
/// Followed by why it is not worth it (declarations only, ...).
const PURE_NOT_TESTED: &str = "//! Pure, not mutation-tested:";

/// The I/O paths (of [`IO`]) a module's code names.
fn io_paths(code: &str) -> Vec<String> {
    let code = strip_comments(code);
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(start) = find_use(rest) {
        let statement = &rest[start..];
        let end = statement.find(';').unwrap_or(statement.len());
        paths.extend(expand(&statement[..end]));
        rest = &statement[end..];
    }
    paths.extend(
        code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .filter(|word| !word.is_empty())
            .map(|word| word.trim_matches(':').to_string()),
    );
    let mut named: Vec<String> = paths
        .into_iter()
        .filter(|path| !NOT_IO.iter().any(|data| path.starts_with(data)))
        .filter(|path| {
            let segments: Vec<&str> = path.split("::").collect();
            IO.iter().any(|io| {
                let io: Vec<&str> = io.split("::").collect();
                segments.windows(io.len()).any(|window| window == io.as_slice())
            })
        })
        .collect();
    named.sort();
    named.dedup();
    named
}

/// The code without its comments and the contents of its string literals (which say
/// anything: "save the session", "http://..."), line breaks kept.
fn strip_comments(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                // A raw string's hashes (`r#"..."#`) were copied before the quote.
                let hashes = chars[..i].iter().rev().take_while(|c| **c == '#').count();
                let raw = chars[..i - hashes].last() == Some(&'r');
                i += 1;
                while i < chars.len() {
                    if !raw && chars[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if chars[i] == '"' && chars[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes {
                        break;
                    }
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                out.push_str("\"\"");
                i += 1 + hashes;
            }
            // A char literal ('"', '\'', 'x'), not a lifetime ('a).
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => i += 3,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The module's doc comment: its leading `//!` lines.
fn doc(code: &str) -> Vec<&str> {
    code.lines()
        .map(str::trim)
        .take_while(|line| line.starts_with("//!"))
        .collect()
}

/// Whether a module's doc comment carries `marker`, with a reason after it when it asks one.
fn marked(code: &str, marker: &str) -> bool {
    doc(code).iter().any(|line| {
        line.strip_prefix(marker)
            .is_some_and(|reason| marker == PURE || reason.trim().len() > 2)
    })
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

/// Whether each module is pure (names no I/O, imports no module of the crate that does), and
/// the I/O found when not. An item a module re-exports (`pub use probes::Backend` in
/// `kernel`) is the re-exported module's, not the re-exporting one's.
fn purity() -> BTreeMap<String, Vec<String>> {
    let modules = modules();
    let direct: BTreeMap<&String, Vec<String>> =
        modules.iter().map(|(module, code)| (module, io_paths(code))).collect();
    let reexported = |target: &String, path: &str| {
        let item = path.rsplit("::").next().unwrap_or(path);
        strip_comments(&modules[target])
            .split(';')
            .filter_map(|statement| statement.trim().strip_prefix("pub use "))
            .flat_map(expand)
            .filter(|reexport| reexport.rsplit("::").next() == Some(item))
            .find_map(|reexport| {
                resolve(target, &reexport, &modules).or_else(|| resolve(target, &format!("self::{reexport}"), &modules))
            })
            .filter(|source| source != target)
    };
    imports()
        .into_iter()
        .map(|(module, imports)| {
            let mut io = direct[&module].clone();
            for (path, target) in imports {
                // Followed through re-exports of re-exports (`session` re-exports `kernel`'s).
                let mut source = target;
                for _ in 0..4 {
                    match reexported(&source, &path) {
                        Some(next) => source = next,
                        None => break,
                    }
                }
                if !direct[&source].is_empty() {
                    io.push(format!("crate::{source}"));
                }
            }
            io.sort();
            io.dedup();
            (module, io)
        })
        .collect()
}

#[test]
fn pure_modules_are_mutation_tested_or_say_why_not() {
    let modules = modules();
    let purity = purity();
    let mut wrong = Vec::new();
    for (module, code) in &modules {
        // lib.rs and main.rs, and files compiled only for tests, are not modules to test.
        if module.is_empty() || module.ends_with("::tests") {
            continue;
        }
        let io = &purity[module];
        let markers = [PURE, TESTED_NOT_PURE, PURE_NOT_TESTED]
            .into_iter()
            .filter(|marker| marked(code, marker))
            .collect::<Vec<_>>();
        match (markers.as_slice(), io.is_empty()) {
            ([], true) => wrong.push(format!(
                "{module}: pure (no I/O) but unmarked: add `{PURE}` to its doc comment, or \
                 `{PURE_NOT_TESTED} <why>`"
            )),
            ([PURE | PURE_NOT_TESTED], false) => {
                wrong.push(format!("{module}: marked pure but names I/O: {io:?}"));
            }
            ([TESTED_NOT_PURE], true) => {
                wrong.push(format!("{module}: marked not pure but names no I/O: mark it `{PURE}`"));
            }
            ([] | [_], _) => {}
            (_, _) => wrong.push(format!("{module}: more than one marker: {markers:?}")),
        }
    }
    assert!(wrong.is_empty(), "purity markers:\n{}", wrong.join("\n"));
}

#[test]
fn the_purity_check_sees_io() {
    let purity = purity();
    // Known cases, so a broken parser cannot pass the markers by seeing no I/O anywhere.
    for (module, io) in [
        ("files", "std::os"),
        ("kernel::loader", "tokio"),
        ("record::enrich::cri", "tonic"),
        ("session::file", "crate::files"),
    ] {
        assert!(
            purity[module].iter().any(|found| found.starts_with(io)),
            "{module}: {io} not seen: {:?}",
            purity[module]
        );
    }
    assert!(purity["hist"].is_empty(), "{:?}", purity["hist"]);
    assert!(
        purity["output::otlp::join"].is_empty(),
        "{:?}",
        purity["output::otlp::join"]
    );
    assert!(
        !purity["output::otlp::export"].is_empty(),
        "the exporter's hyper client is I/O"
    );
    // `crate::session::Backend` is `kernel::probes`' (re-exported twice), not the I/O of
    // `kernel` (mod.rs) that re-exports it.
    assert!(purity["report::summary"].is_empty(), "{:?}", purity["report::summary"]);
    assert_eq!(
        io_paths("use std::{fmt, fs::File};\nfn f() { nix::unistd::sync(); } // tokio\nconst S: &str = \"libc\";"),
        ["nix::unistd::sync", "std::fs::File"]
    );
    assert_eq!(
        strip_comments("let q = '\"'; let s = r#\"a \" tokio\"#; f::<'a>(\"\\\" nix\"); // libc\nx"),
        "let q = ; let s = r#\"\"; f::<'a>(\"\"); \nx"
    );
    assert!(marked(
        "//! Doc.\n//!\n//! Pure, not mutation-tested: declarations only.\n",
        PURE_NOT_TESTED
    ));
    assert!(
        !marked("//! Pure, not mutation-tested:\n", PURE_NOT_TESTED),
        "a reason is required"
    );
}
