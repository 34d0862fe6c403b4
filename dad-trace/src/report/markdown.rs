//! The comparison as a GitHub-flavoured Markdown table (pull requests, CI step summaries),
//! from the same rows as the text and HTML tables, then the verdict on the change.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::fmt::Write as _;

use super::compare::{Comparison, change_line, render_settings, rows};
use crate::text;

/// A GitHub-flavoured markdown table (pull requests, CI step summaries).
#[must_use]
pub fn render_markdown(comparison: &Comparison) -> String {
    let rows = rows(comparison);
    let multi = comparison.sessions.len() > 1;
    let mut out = String::from("| metric |");
    for column in &comparison.sessions {
        let _ = write!(out, " {} |", text::markdown(&column.label));
    }
    out.push_str(if multi { " last/first |\n| --- |" } else { "\n| --- |" });
    out.push_str(&" ---: |".repeat(comparison.sessions.len() + usize::from(multi)));
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row.cells.iter().map(|cell| text::markdown(cell)).collect();
        let _ = write!(out, "| {} | {} |", row.metric, cells.join(" | "));
        if multi {
            let _ = write!(out, " {} |", row.ratio.unwrap_or_default());
        }
        out.push('\n');
    }
    if let Some(line) = change_line(comparison, text::markdown) {
        let _ = writeln!(out, "\n{line}");
    }
    if !comparison.setting_changes.is_empty() {
        out.push_str("\nSettings that changed between sessions:\n\n");
        render_settings(&mut out, comparison, |name, values| {
            let values: Vec<String> = values.iter().map(|value| text::markdown(value)).collect();
            format!("- {}: {}\n", text::markdown(name), values.join(" → "))
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::compare::tests::{compare_kept, session};

    #[test]
    fn a_table_then_the_verdict_and_the_settings() {
        let before = session("node-a", &[1500, 1800, 2000, 1600], "0");
        let after = session("node-a", &[1, 2, 1, 1], "1");
        let comparison = compare_kept(&[("before".into(), before), ("after".into(), after)]);
        let markdown = render_markdown(&comparison);
        assert!(
            markdown.starts_with("| metric | before | after | last/first |\n| --- | ---: | ---: | ---: |"),
            "{markdown}"
        );
        assert!(markdown.contains("| DAD p50 | 1.60 s | - |  |"), "{markdown}");
        assert!(
            markdown.contains("\nper-pod delay before -> after: no real change: the difference could be noise (Kolmogorov–Smirnov D 1.00, p 0.011, 4 vs 4 pods; real when p < 0.01)\n"),
            "{markdown}"
        );
        assert!(
            markdown.contains("- net.core.devconf\\_inherit\\_init\\_net: 0 → 1"),
            "{markdown}"
        );
        let alone = render_markdown(&compare_kept(&[("before".into(), session("node-a", &[1500], "0"))]));
        assert!(alone.starts_with("| metric | before |\n| --- | ---: |\n"), "{alone}");
        assert!(
            !alone.contains("per-pod delay before"),
            "no change with one session: {alone}"
        );
    }

    /// Names from hostile session files keep every table's shape.
    #[test]
    fn hostile_names_keep_the_tables() {
        let before = session("a|b\nc\u{1b}[2J", &[1500, 1800], "0");
        let after = session("node-a", &[1, 2], "1");
        let comparison = compare_kept(&[("be|fore".into(), before), ("af`ter".into(), after)]);
        let markdown = render_markdown(&comparison);
        let table: Vec<&str> = markdown.lines().take_while(|line| line.starts_with('|')).collect();
        let columns = |line: &str| line.replace("\\|", "").matches('|').count();
        assert!(table.len() > 20, "{markdown}");
        assert!(
            table.iter().all(|line| columns(line) == columns(table[0])),
            "{markdown}"
        );
        assert!(markdown.contains("| a\\|b\\\\x0ac\\\\x1b\\[2J |"), "{markdown}");
        assert!(markdown.contains("per-pod delay be\\|fore -> af\\`ter: "), "{markdown}");
    }
}
