//! Sessions side by side: before/after tuning, or several nodes, with whether the per-pod
//! delay changed for real between the first and the last ([`super::significance`]).
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{collections::BTreeSet, fmt::Write as _};

use serde::Serialize;

pub use super::merge::merge;
use super::{
    figures::Figures,
    significance::{ALPHA, ChangeTest},
    summary::{PodDelay, SessionSummary, summarize},
};
use crate::{
    hist::{Summary, Unit, human, log2_counts, slot_bounds},
    session::Session,
    text::terminal,
};

/// How many of the slowest pods each session lists.
const OUTLIERS: usize = 3;

#[derive(Debug, Serialize)]
pub struct Column {
    pub label: String,
    pub summary: SessionSummary,
    /// Host DAD settings the session was recorded under (at its start).
    pub settings: std::collections::BTreeMap<String, String>,
    /// The slowest pods of the session.
    pub outliers: Vec<PodDelay>,
}

/// A host setting that differs between sessions (value when each session started).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SettingChange {
    pub name: String,
    pub values: Vec<Option<String>>,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub sessions: Vec<Column>,
    pub setting_changes: Vec<SettingChange>,
    /// Per-pod delay of the last session against the first: a real change or noise.
    /// `None` with one session, or when a side has no pods.
    pub change: Option<ChangeTest>,
}

#[must_use]
pub fn compare(sessions: &[(String, Session<Figures>)]) -> Comparison {
    let columns: Vec<Column> = sessions
        .iter()
        .map(|(label, session)| {
            let summary = summarize(session);
            let mut outliers = summary.pods.clone();
            outliers.sort_by_key(|pod| std::cmp::Reverse(pod.delay_ns));
            outliers.truncate(OUTLIERS);
            Column {
                label: label.clone(),
                summary,
                settings: session.sysctls_start.clone(),
                outliers,
            }
        })
        .collect();
    let names: BTreeSet<&String> = sessions
        .iter()
        .flat_map(|(_, session)| session.sysctls_start.keys())
        .collect();
    let setting_changes = names
        .into_iter()
        .filter_map(|name| {
            let values: Vec<Option<String>> = sessions
                .iter()
                .map(|(_, session)| session.sysctls_start.get(name).cloned())
                .collect();
            values.windows(2).any(|pair| pair[0] != pair[1]).then(|| SettingChange {
                name: name.clone(),
                values,
            })
        })
        .collect();
    let change = match columns.as_slice() {
        [first, .., last] => ChangeTest::of(&pod_delays_of(first), &pod_delays_of(last), ALPHA),
        _ => None,
    };
    Comparison {
        sessions: columns,
        setting_changes,
        change,
    }
}

fn pod_delays_of(column: &Column) -> Vec<u64> {
    column.summary.pods.iter().map(|pod| pod.delay_ns).collect()
}

/// The verdict on per-pod delay from the first session to the last, the labels shown with
/// `label` (escaped for the format); `None` with one session.
#[must_use]
pub fn change_line(comparison: &Comparison, label: impl Fn(&str) -> String) -> Option<String> {
    let [first, .., last] = comparison.sessions.as_slice() else {
        return None;
    };
    let head = format!("per-pod delay {} -> {}", label(&first.label), label(&last.label));
    Some(if let Some(change) = &comparison.change {
        format!("{head}: {}", change.sentence())
    } else {
        let empty = if first.summary.pods.is_empty() { first } else { last };
        format!("{head}: cannot tell, {} has no pods", label(&empty.label))
    })
}

type Pick = fn(&Summary) -> u64;
type DelaySet = fn(&SessionSummary) -> Option<Summary>;
const STATS: [(&str, Pick); 4] = [
    ("p50", |s| s.p50_ns),
    ("p90", |s| s.p90_ns),
    ("p99", |s| s.p99_ns),
    ("max", |s| s.max_ns),
];

/// One row of the comparison table, in every format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub metric: String,
    /// One cell per session.
    pub cells: Vec<String>,
    /// Last/first, for delays when there are several sessions.
    pub ratio: Option<String>,
}

/// The rows of the comparison table: the one source of the text, markdown and HTML tables.
#[must_use]
pub fn rows(comparison: &Comparison) -> Vec<Row> {
    let columns = &comparison.sessions;
    let cells = |f: &dyn Fn(&SessionSummary) -> String| columns.iter().map(|c| f(&c.summary)).collect::<Vec<_>>();
    let plain = |metric: &str, cells: Vec<String>| Row {
        metric: metric.to_string(),
        cells,
        ratio: None,
    };
    let mut rows = vec![
        plain("backend", cells(&|s| s.backend.to_string())),
        plain("kernel", cells(&|s| s.kernel_release.clone())),
        plain("host", cells(&|s| s.hostname.clone())),
        plain("addresses", cells(&|s| s.addresses.to_string())),
        plain("failed", cells(&|s| s.failed.to_string())),
        plain("aborted", cells(&|s| s.aborted.to_string())),
        plain("lost events", cells(&|s| s.lost_events.to_string())),
        plain("pods", cells(&|s| s.pods.len().to_string())),
    ];
    if columns.iter().any(|c| c.summary.socket_errors.traced) {
        rows.push(plain(
            "socket errors in DAD",
            cells(&|s| s.socket_errors.during_dad_line()),
        ));
    }
    let mut delay_sets: Vec<(&str, DelaySet)> = vec![
        ("tentative", |s| s.tentative),
        ("DAD", |s| s.dad),
        ("per-pod", |s| s.pod),
    ];
    // Pod start, when a session has it: CNI ADD, DAD's wait inside it, sandbox → container.
    if columns.iter().any(|c| c.summary.pod_start.has_start_data()) {
        delay_sets.extend([
            ("CNI ADD", (|s| s.pod_start.cni_add) as DelaySet),
            ("DAD in ADD", |s| s.pod_start.dad_wait),
            ("pod start", |s| s.pod_start.pod_start),
        ]);
    }
    for (name, set) in delay_sets {
        for (stat, pick) in STATS {
            let values: Vec<Option<u64>> = columns.iter().map(|c| set(&c.summary).as_ref().map(pick)).collect();
            let ratio = match (values.first().copied().flatten(), values.last().copied().flatten()) {
                // Histograms hold at least 1 ns (a zero delay is recorded as 1).
                (Some(first), Some(last)) if columns.len() > 1 => {
                    Some(readable_ratio(last as f64 / first.max(1) as f64))
                }
                _ => None,
            };
            let cells = values
                .iter()
                .map(|v| v.map_or_else(|| "-".to_string(), human))
                .collect();
            rows.push(Row {
                metric: format!("{name} {stat}"),
                cells,
                ratio,
            });
        }
    }
    if columns.iter().any(|c| c.summary.pod_start.has_start_data()) {
        type ShareOf = fn(&SessionSummary) -> Option<super::podstart::Shares>;
        let shares: [(&str, ShareOf); 2] = [
            ("DAD share of ADD p50", |s| s.pod_start.dad_share_of_add),
            ("DAD share of start p50", |s| s.pod_start.dad_share_of_start),
        ];
        for (metric, pick) in shares {
            rows.push(plain(
                metric,
                cells(&|s| pick(s).map_or_else(|| "-".to_string(), |share| format!("{:.0}%", share.p50 * 100.0))),
            ));
        }
    }
    rows
}

/// Marks of each session in the overlaid histogram.
const MARKS: [char; 4] = ['*', '#', '+', 'o'];

/// Per-pod delay of every session in one bcc-style log2 histogram, a bar per session.
#[must_use]
pub fn render_overlaid(comparison: &Comparison) -> String {
    let per_session: Vec<Vec<u64>> = comparison
        .sessions
        .iter()
        .map(|c| c.summary.pods.iter().map(|pod| pod.delay_ns).collect())
        .collect();
    let all: Vec<u64> = per_session.iter().flatten().copied().collect();
    if all.is_empty() {
        return String::new();
    }
    let unit = Unit::for_values(&all);
    let counts: Vec<[u64; 64]> = per_session.iter().map(|values| log2_counts(values, unit)).collect();
    let last = counts
        .iter()
        .filter_map(|c| c.iter().rposition(|&n| n > 0))
        .max()
        .unwrap_or(0);
    let peak = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    let mut out = String::from("Per-pod delay, all sessions (");
    for (index, column) in comparison.sessions.iter().enumerate() {
        let _ = write!(
            out,
            "{}{} = {}",
            if index > 0 { ", " } else { "" },
            MARKS[index % MARKS.len()],
            terminal(&column.label)
        );
    }
    let _ = writeln!(out, "):\n{:>10}{:15}: counts", unit.label(), "");
    for slot in 0..=last {
        let (low, high) = slot_bounds(slot);
        let cells: Vec<String> = counts.iter().map(|c| format!("{:<5}", c[slot])).collect();
        let bars: String = counts
            .iter()
            .enumerate()
            .map(|(index, c)| {
                MARKS[index % MARKS.len()]
                    .to_string()
                    .repeat(usize::try_from(c[slot] * 30 / peak).unwrap_or(0))
            })
            .collect();
        let _ = writeln!(out, "{low:>10} -> {high:<10} : {} |{bars}", cells.join(" "));
    }
    out
}

/// Aligned terminal table, then slowest pods and changed settings.
#[must_use]
pub fn render_text(comparison: &Comparison) -> String {
    // Every cell is shown safe: hosts, kernels and labels come from session files.
    let rows: Vec<Row> = rows(comparison)
        .into_iter()
        .map(|row| Row {
            cells: row.cells.iter().map(|cell| terminal(cell).into_owned()).collect(),
            ..row
        })
        .collect();
    let labels: Vec<String> = comparison
        .sessions
        .iter()
        .map(|c| terminal(&c.label).into_owned())
        .collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.cells[i].len())
            .chain([labels[i].len()])
            .max()
            .unwrap_or(0)
    };
    let metric = rows
        .iter()
        .map(|row| row.metric.chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    let mut out = format!("{:<metric$}", "");
    for (i, label) in labels.iter().enumerate() {
        let _ = write!(out, "  {label:>w$}", w = width(i));
    }
    out.push_str(if labels.len() > 1 { "  last/first\n" } else { "\n" });
    for row in &rows {
        let _ = write!(out, "{:<metric$}", row.metric);
        for (i, cell) in row.cells.iter().enumerate() {
            let _ = write!(out, "  {cell:>w$}", w = width(i));
        }
        match &row.ratio {
            Some(ratio) => writeln!(out, "  {ratio}"),
            None => writeln!(out),
        }
        .ok();
    }
    if let Some(line) = change_line(comparison, |label| terminal(label).into_owned()) {
        let _ = writeln!(out, "{line}");
    }
    for column in &comparison.sessions {
        let slowest: Vec<String> = column
            .outliers
            .iter()
            .map(|p| format!("{} {}", terminal(&p.pod), human(p.delay_ns)))
            .collect();
        if !slowest.is_empty() {
            let _ = writeln!(
                out,
                "slowest pods in {}: {}",
                terminal(&column.label),
                slowest.join(", ")
            );
        }
        let slowest_starts: Vec<String> = column
            .summary
            .pod_start
            .slowest
            .iter()
            .take(OUTLIERS)
            .filter_map(|pod| {
                let (what, ns) = match (pod.pod_start_ns, pod.cni_add_ns) {
                    (Some(start), _) => ("start", start),
                    (None, Some(add)) => ("ADD", add),
                    (None, None) => return None,
                };
                Some(format!("{} {what} {}", terminal(&pod.pod), human(ns)))
            })
            .collect();
        if !slowest_starts.is_empty() {
            let _ = writeln!(
                out,
                "slowest pod starts in {}: {}",
                terminal(&column.label),
                slowest_starts.join(", ")
            );
        }
    }
    render_settings(&mut out, comparison, |name, values| {
        let values: Vec<_> = values.iter().map(|value| terminal(value)).collect();
        format!("setting {}: {}\n", terminal(name), values.join(" -> "))
    });
    out.push('\n');
    out.push_str(&render_overlaid(comparison));
    out
}

pub(crate) fn render_settings(out: &mut String, comparison: &Comparison, line: impl Fn(&str, &[String]) -> String) {
    for change in &comparison.setting_changes {
        let values: Vec<String> = change
            .values
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| "?".into()))
            .collect();
        out.push_str(&line(&change.name, &values));
    }
}

/// A last/first ratio as a person reads it: `1.05×` when not shorter, `16× shorter` or
/// `1,600× shorter` (two significant digits) when it is, never `6.3e-4x`.
#[must_use]
pub fn readable_ratio(ratio: f64) -> String {
    if !ratio.is_finite() || ratio <= 0.0 {
        return "-".into();
    }
    if ratio >= 1.0 {
        return format!("{ratio:.2}×");
    }
    let times = 1.0 / ratio;
    // Below 9.95 one decimal shows (9.95 would print as 10.0).
    if times < 9.95 {
        return format!("{times:.1}× shorter");
    }
    // Two significant digits, then thousands separators.
    let magnitude = 10_f64.powi(times.log10().floor() as i32 - 1);
    // Positive (ratio > 0 above) and below 2^64 (ratio ≥ f64's smallest, times < 10^309
    // saturates): the cast only drops the fraction, which round() already did.
    #[allow(clippy::cast_sign_loss, reason = "positive: see above")]
    let rounded = ((times / magnitude).round() * magnitude) as u64;
    let digits = rounded.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{grouped}× shorter")
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::session::{AddressEvent, Backend, Outcome};

    pub(crate) fn session(host: &str, tentative_ms: &[u64], inherit: &str) -> Session {
        let base: DateTime<Utc> = "2026-11-25T20:00:00Z".parse().expect("literal time");
        let mut session = Session::new(Backend::Tracepoint, "6.18.44".into(), host.into(), base);
        session
            .sysctls_start
            .insert("net.core.devconf_inherit_init_net".into(), inherit.into());
        session
            .sysctls_start
            .insert("net.ipv6.conf.all.accept_dad".into(), "0".into());
        for (i, ms) in tentative_ms.iter().enumerate() {
            session.events.push(AddressEvent {
                time: base + chrono::Duration::milliseconds(i64::try_from(*ms).expect("small") + 10),
                netns_inode: 100 + u32::try_from(i).expect("small"),
                netns_cookie: None,
                netns_name: Some(format!("{host}-pod{i}")),
                host_netns: false,
                pod: None,
                ifname: "eth0".into(),
                ifindex: 2,
                peer: None,
                addr: "fd00::1".parse().expect("literal"),
                tentative_ns: ms * 1_000_000,
                dad_ns: (*ms > 100).then_some(ms * 1_000_000),
                link_wait_ns: None,
                delay_ns: None,
                probing_ns: None,
                optimistic: false,
                outcome: Outcome::Settled,
                partial: false,
                node: None,
                duplicate_of: Vec::new(),
            });
        }
        session
    }

    /// Compares sessions kept whole, as these tests build them.
    pub(crate) fn compare_kept(sessions: &[(String, Session)]) -> Comparison {
        let folded: Vec<_> = sessions
            .iter()
            .map(|(label, session)| (label.clone(), session.clone().fold()))
            .collect();
        compare(&folded)
    }

    #[test]
    fn ratios_read_as_words_and_digits() {
        for (ratio, text) in [
            (1.0, "1.00×"),
            (3.204, "3.20×"),
            (0.5, "2.0× shorter"),
            (0.1001, "10× shorter"),
            (0.1006, "9.9× shorter"),
            (0.0625, "16× shorter"),
            (6.3e-4, "1,600× shorter"),
            (5.3e-5, "19,000× shorter"),
            (1e-6, "1,000,000× shorter"),
            (0.0, "-"),
            (f64::NAN, "-"),
            (f64::INFINITY, "-"),
        ] {
            assert_eq!(readable_ratio(ratio), text, "{ratio}");
        }
    }

    #[test]
    fn before_after_shows_ratio_outliers_and_changed_settings() {
        let before = session("node-a", &[1500, 1800, 2000, 1600], "0");
        let after = session("node-a", &[1, 2, 1, 1], "1");
        let comparison = compare_kept(&[("before".into(), before), ("after".into(), after)]);
        assert_eq!(
            comparison.setting_changes,
            [SettingChange {
                name: "net.core.devconf_inherit_init_net".into(),
                values: vec![Some("0".into()), Some("1".into())]
            }]
        );
        assert_eq!(comparison.sessions[0].outliers[0].delay_ns, 2_000_000_000);
        let text = render_text(&comparison);
        assert!(
            text.contains("tentative p50") && text.contains("1,600× shorter"),
            "{text}"
        );
        assert!(text.contains("slowest pods in before: node-a-pod2 2.00 s"), "{text}");
        assert!(
            text.contains("setting net.core.devconf_inherit_init_net: 0 -> 1"),
            "{text}"
        );
        assert!(text.contains("(* = before, # = after)"), "{text}");
        // The table's columns line up under the header, however long a metric's name.
        let table: Vec<&str> = text
            .lines()
            .take_while(|line| !line.starts_with("per-pod delay"))
            .collect();
        let header_end = table[0].find("before").expect("header") + "before".len();
        for row in &table[1..] {
            assert!(!row.ends_with(' '), "no trailing blanks: {row:?}");
            let first_cell_end = row[..header_end].trim_end().len();
            assert_eq!(first_cell_end, header_end, "{row:?} under {:?}", table[0]);
        }
        assert!(text.contains("1024 -> 2047       : 4     0     |****"), "{text}");
        // The second session's bars have its own mark, scaled to the peak (3 of 4 pods).
        assert!(text.contains(&format!(": 0     3     |{}\n", "#".repeat(22))), "{text}");
        // Four pods a side, fully apart: p 0.011, not under 1 %.
        assert!(
            text.contains("\nper-pod delay before -> after: no real change: the difference could be noise (Kolmogorov–Smirnov D 1.00, p 0.011, 4 vs 4 pods; real when p < 0.01)\n"),
            "{text}"
        );
        let json = serde_json::to_value(&comparison).expect("serializable");
        assert_eq!(json["sessions"][1]["summary"]["addresses"], 4);
        assert_eq!(json["change"]["test"], "kolmogorov-smirnov");
        assert_eq!(json["change"]["direction"], "faster");
        assert_eq!(
            (
                json["change"]["before_count"].as_u64(),
                json["change"]["after_count"].as_u64()
            ),
            (Some(4), Some(4))
        );
        assert_eq!(json["change"]["significant"], false);
        assert!((json["change"]["p_value"].as_f64().expect("a number") - 0.011_07).abs() < 1e-4);
    }

    /// Twenty pods a side, as the fixtures: a real change. One session: no verdict; a side
    /// without pods: said, not guessed.
    #[test]
    fn the_change_is_judged_first_to_last() {
        let slow: Vec<u64> = (0..20).map(|i| 1000 + 50 * i).collect();
        let fast: Vec<u64> = (0..20).map(|i| 1 + i).collect();
        let comparison = compare_kept(&[
            ("before".into(), session("node-a", &slow, "0")),
            ("middle".into(), session("node-a", &slow, "0")),
            ("after".into(), session("node-a", &fast, "1")),
        ]);
        let change = comparison.change.expect("both sides have pods");
        assert!(change.significant && change.p_value < 1e-9, "{change:?}");
        let line = change_line(&comparison, str::to_string).expect("several sessions");
        assert!(line.starts_with("per-pod delay before -> after: a real change: faster (Kolmogorov–Smirnov D 1.00, p 5.5e-10, 20 vs 20 pods"), "{line}");
        let alone = compare_kept(&[("before".into(), session("node-a", &slow, "0"))]);
        assert!(alone.change.is_none() && change_line(&alone, str::to_string).is_none());
        assert!(!render_text(&alone).contains("per-pod delay before"));
        // One session has nothing to be a ratio of.
        assert!(rows(&alone).iter().all(|row| row.ratio.is_none()));
        assert!(!render_text(&alone).contains("last/first"));
        assert!(
            render_text(&comparison)
                .lines()
                .next()
                .is_some_and(|header| header.ends_with("  after  last/first")),
            "{}",
            render_text(&comparison)
        );
        for (first, last, empty) in [(&[][..], &fast[..], "before"), (&slow[..], &[][..], "after")] {
            let comparison = compare_kept(&[
                ("before".into(), session("node-a", first, "0")),
                ("after".into(), session("node-a", last, "1")),
            ]);
            assert!(comparison.change.is_none());
            assert_eq!(
                change_line(&comparison, |label| format!("<{label}>")).as_deref(),
                Some(format!("per-pod delay <before> -> <after>: cannot tell, <{empty}> has no pods").as_str())
            );
        }
    }

    /// The slowest pod starts are listed for the sessions that have them, and only there.
    #[test]
    fn slowest_pod_starts_only_where_there_are_some() {
        let mut before = session("node-a", &[1500, 1800], "0");
        before.pods = vec![
            crate::report::podstart::tests::pod(7, 1900, 1700),
            crate::report::podstart::tests::pod(8, 1200, 1000),
        ];
        let after = session("node-a", &[1, 2], "1");
        let text = render_text(&compare_kept(&[("before".into(), before), ("after".into(), after)]));
        assert!(
            text.contains("slowest pod starts in before: team-a/web-7 start 1.96 s, team-a/web-8 start 1.26 s\n"),
            "{text}"
        );
        assert!(!text.contains("slowest pod starts in after"), "{text}");
    }

    /// Names from hostile session files keep every table's shape and the terminal's state.
    #[test]
    fn hostile_names_keep_the_tables() {
        let before = session("a|b\nc\u{1b}[2J", &[1500, 1800], "0");
        let after = session("node-a", &[1, 2], "1");
        let comparison = compare_kept(&[("be|fore".into(), before), ("after".into(), after)]);
        let text = render_text(&comparison);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("a|b\\x0ac\\x1b[2J"), "{text}");
    }
}
