//! Sample output in the docs, checked against the real thing: a block right after a
//! `<!-- sample: NAME -->` line, fenced as ```` ```text ````, must have the shape of what the
//! binary prints now: every line printed must look like a line of the sample. Shapes, not
//! bytes: numbers, addresses, ids, pods, units and histogram bars vary from run to run; the
//! lines a format has (a header, a kind of row, a section) do not. Written from a real run
//! with `DAD_TRACE_BLESS=1`.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Set to rewrite the samples from this run instead of checking them.
pub const BLESS_ENV: &str = "DAD_TRACE_BLESS";
const MARKER: &str = "<!-- sample: ";

/// A sample block in a markdown file.
#[derive(Debug, PartialEq, Eq)]
pub struct Sample {
    pub file: PathBuf,
    pub name: String,
    /// The block's lines (between the fences).
    pub text: String,
    /// Byte range of `text` in the file, for rewriting it.
    range: std::ops::Range<usize>,
}

/// Every sample block of `text` (the contents of `file`).
pub fn samples_in(file: &Path, text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut at = 0;
    while let Some(found) = text[at..].find(MARKER) {
        let start = at + found + MARKER.len();
        let end = start + text[start..].find(" -->").context("unclosed sample marker")?;
        let name = text[start..end].to_string();
        let after = &text[end..];
        let open = after
            .find("\n```text\n")
            .filter(|&open| after[..open].trim_end_matches(" -->").trim().is_empty())
            .with_context(|| format!("{}: sample {name} is not followed by a ```text block", file.display()))?;
        let body = end + open + "\n```text\n".len();
        let close = if text[body..].starts_with("```") {
            body
        } else {
            body + text[body..].find("\n```").context("unclosed sample block")?
        };
        samples.push(Sample {
            file: file.to_path_buf(),
            name,
            text: text[body..close].to_string(),
            range: body..close,
        });
        at = close;
    }
    Ok(samples)
}

/// The samples of README.md and docs/*.md, by name; a name twice is an error.
pub fn all_samples(root: &Path) -> anyhow::Result<Vec<Sample>> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut samples = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        samples.extend(samples_in(&file, &text)?);
    }
    let mut names = BTreeSet::new();
    for sample in &samples {
        if !names.insert(&sample.name) {
            bail!("sample {} appears twice", sample.name);
        }
    }
    Ok(samples)
}

/// Replaces `sample`'s block in its file with `text`.
pub fn bless(sample: &Sample, text: &str) -> anyhow::Result<()> {
    let mut contents = std::fs::read_to_string(&sample.file)?;
    let current = samples_in(&sample.file, &contents)?
        .into_iter()
        .find(|found| found.name == sample.name)
        .context("sample gone")?;
    let mut text = text.trim_end_matches('\n').to_string();
    if current.range.is_empty() {
        // An empty block: its closing fence follows at once.
        text.push('\n');
    }
    contents.replace_range(current.range, &text);
    std::fs::write(&sample.file, contents)?;
    Ok(())
}

/// A line's shape: numbers, IPv6 addresses, long hex ids and histogram bars made generic,
/// runs of blanks made one.
#[must_use]
pub fn shape(line: &str) -> String {
    let mut line = line.to_string();
    // A histogram's bar: `|***   |` of any fill.
    while let Some(start) = line.find('|') {
        let Some(len) = line[start + 1..].find('|') else { break };
        let inner = &line[start + 1..start + 1 + len];
        if !inner.chars().all(|c| c == '*' || c == ' ') {
            break;
        }
        line.replace_range(start..=start + 1 + len, "[bar]");
    }
    line.split_whitespace().map(token_shape).collect::<Vec<_>>().join(" ")
}

fn token_shape(token: &str) -> String {
    let token = without_uuid(token);
    let token = token.as_str();
    // A bar of a histogram of several sessions: `|****`, `|###`, or none.
    if let Some(bar) = token.strip_prefix('|')
        && bar.chars().all(|c| c == '*' || c == '#')
    {
        return "[bar]".into();
    }
    let bare = token.trim_end_matches(',');
    // A pod (`namespace/name`): which pods come first varies with their delays.
    if let Some((namespace, name)) = bare.split_once('/')
        && [namespace, name].iter().all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
    {
        return token.replace(bare, "<pod>");
    }
    // Delays print in the unit that fits them.
    if matches!(
        bare,
        "s" | "ms" | "us" | "µs" | "ns" | "secs" | "msecs" | "usecs" | "nsecs"
    ) {
        return "<unit>".into();
    }
    let bare = token.trim_matches(|c: char| matches!(c, ',' | '(' | ')' | '"' | '{' | '}' | '[' | ']' | '.'));
    // A kernel release (`6.1.0-18-amd64`) differs from machine to machine.
    if bare.starts_with(|c: char| c.is_ascii_digit()) && bare.contains('-') && bare.contains(char::is_alphabetic) {
        return token.replace(bare, "<release>");
    }
    let address = bare.split('/').next().unwrap_or(bare);
    if address.contains(':') && address.parse::<std::net::Ipv6Addr>().is_ok() {
        return token.replace(bare, "<addr>");
    }
    let mut out = String::new();
    let mut chars = token.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_hexdigit() {
            let mut run = String::from(c);
            while let Some(&next) = chars.peek().filter(|next| next.is_ascii_hexdigit() || **next == '.') {
                run.push(next);
                chars.next();
            }
            let digits = run.chars().all(|c| c.is_ascii_digit() || c == '.');
            // Ids and UUIDs' groups: hex with both digits and letters.
            let id = run.len() >= 4
                && run.chars().all(|c| c.is_ascii_hexdigit())
                && run.chars().any(|c| c.is_ascii_digit())
                && run.chars().any(|c| c.is_ascii_alphabetic());
            if digits || id {
                out.push('#');
            } else {
                // A word that merely starts with hex letters (`add`, `dead`, `beef`).
                out.push_str(&run);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `token` with a UUID in it (`cni-0d3d4eb4-7f58-deda-462e-9f8e1a2b3c4d`) as `<uuid>`.
fn without_uuid(token: &str) -> String {
    let parts: Vec<&str> = token.split('-').collect();
    let hex = |part: &str, len: usize| part.len() >= len && part[..len].chars().all(|c| c.is_ascii_hexdigit());
    for start in 0..parts.len().saturating_sub(4) {
        let group = &parts[start..start + 5];
        let exact = [8, 4, 4, 4]
            .iter()
            .zip(group)
            .all(|(&len, part)| part.len() == len && hex(part, len));
        if exact && hex(group[4], 12) {
            let mut out = parts[..start].join("-");
            if start > 0 {
                out.push('-');
            }
            out.push_str("<uuid>");
            out.push_str(&group[4][12..]);
            for rest in &parts[start + 5..] {
                out.push('-');
                out.push_str(rest);
            }
            return out;
        }
    }
    token.to_string()
}

/// The shapes of `text`'s lines.
#[must_use]
pub fn shapes(text: &str) -> BTreeSet<String> {
    text.lines().map(shape).filter(|shape| !shape.is_empty()).collect()
}

/// What differs between the doc's sample and the output, as a readable list, when the
/// output has a line the doc has no line like: a changed or new format. A kind of line the
/// doc shows and this run did not print is not drift: some appear only at some timings (a
/// host-side veth that settles before its pod is named says `peer #2`, not `serves POD`).
#[must_use]
pub fn drift(sample: &str, output: &str) -> Option<String> {
    let (doc, now) = (shapes(sample), shapes(output));
    if now.is_subset(&doc) {
        return None;
    }
    let mut text = String::new();
    for gone in doc.difference(&now) {
        let _ = writeln!(text, "  only in the doc:    {gone}");
    }
    for new in now.difference(&doc) {
        let _ = writeln!(text, "  only in the output: {new}");
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "Intro\n\n<!-- sample: doctor -->\n```text\nline 1\nline 2\n```\n\nmore\n\
                       <!-- sample: report -->\n```text\nr\n```\n";

    #[test]
    fn blocks_are_found_after_their_markers() {
        let samples = samples_in(Path::new("x.md"), DOC).expect("samples");
        let found: Vec<(&str, &str)> = samples.iter().map(|s| (s.name.as_str(), s.text.as_str())).collect();
        assert_eq!(found, [("doctor", "line 1\nline 2"), ("report", "r")]);
        assert!(
            samples_in(Path::new("x.md"), "<!-- sample: x -->\ntext\n").is_err(),
            "no block"
        );
        let empty = samples_in(Path::new("x.md"), "<!-- sample: e -->\n```text\n```\n").expect("empty");
        assert_eq!(empty[0].text, "");
    }

    #[test]
    fn shapes_keep_the_format_and_drop_the_values() {
        assert_eq!(
            shape("10:21:53.817  team-a/web-0  eth0  fe80::ecee:f6ff:fe71:93e4   1.15 s     1.15 s  settled"),
            "#:#:# <pod> eth# <addr> # <unit> # <unit> settled"
        );
        assert_eq!(
            shape("      1024 -> 2047       : 20       |****************************************|"),
            shape("         0 -> 1          : 0        |                                        |")
        );
        assert_eq!(shape("ADD  ptp  container 0123456789abcdef0123"), "ADD ptp container #");
        assert_eq!(
            shape("cni-02ee9ae3-5c12-06bf-41c0-1a2b3c4d5e6f eth0"),
            shape("cni-0d3d4eb4-7f58-deda-462e-9f8e1a2b3c4d eth0")
        );
        assert_eq!(shape("(cni-0d3d4eb4-7f58-deda-462e-9f8e1a2b3c4d),"), "(cni-<uuid>),");
        assert_eq!(shape("dead add DAD"), "dead add DAD");
        assert_eq!(
            shape("slowest: team-c/api-1 2.0 s, x"),
            shape("slowest: team-a/web-0 15 us, x")
        );
        assert_eq!(shape("/opt/cni/bin/"), "/opt/cni/bin/");
        assert_eq!(
            shape("dad_trace_cni_add_seconds_count{plugin=\"ptp\"} 3"),
            "dad_trace_cni_add_seconds_count{plugin=\"ptp\"} #"
        );
        assert_eq!(shape("990 ms"), shape("1.15 s"));
        assert_eq!(shape("0 -> 1 : 0     3     |######"), shape("2 -> 3 : 0  0  |"));
        assert_eq!(shape("on kernel 6.18.44-fc-v1272."), shape("on kernel 6.1.0-18-amd64."));
        assert_ne!(
            shape("POD ADDRS DELAY"),
            shape("POD ADDRS DELAY FAILED"),
            "a new column is drift"
        );
    }

    #[test]
    fn drift_names_the_lines_that_differ() {
        assert_eq!(drift("a 1\nb 2", "b 7\na 3\na 4"), None);
        assert_eq!(drift("a 1\npeer 2", "a 3"), None, "a line of some timings only");
        let found = drift("a 1\nold 2", "a 1\nnew 2").expect("drift");
        assert!(
            found.contains("only in the doc:    old #") && found.contains("only in the output: new #"),
            "{found}"
        );
    }
}
