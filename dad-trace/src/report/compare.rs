//! Sessions side by side: before/after tuning, or several nodes; and merging node sessions
//! into one (events are stored one by one, so merging loses nothing).
use std::{collections::BTreeSet, fmt::Write as _};

use anyhow::Context as _;
use serde::Serialize;

use super::summary::{PodDelay, SessionSummary, summarize};
use crate::{
    hist::{Summary, Unit, human, log2_counts, slot_bounds},
    session::Session,
    text::{self, terminal},
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
}

#[must_use]
pub fn compare(sessions: &[(String, Session)]) -> Comparison {
    let columns = sessions
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
    Comparison {
        sessions: columns,
        setting_changes,
    }
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
                (Some(first), Some(last)) if columns.len() > 1 && first > 0 => {
                    let ratio = last as f64 / first as f64;
                    // Small ratios (DAD gone) keep two significant digits.
                    Some(if ratio >= 0.01 {
                        format!("{ratio:.2}x")
                    } else {
                        format!("{ratio:.1e}x")
                    })
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
    let mut out = format!("{:<16}", "");
    for (i, label) in labels.iter().enumerate() {
        let _ = write!(out, "  {label:>w$}", w = width(i));
    }
    out.push_str(if labels.len() > 1 { "  last/first\n" } else { "\n" });
    for row in &rows {
        let _ = write!(out, "{:<16}", row.metric);
        for (i, cell) in row.cells.iter().enumerate() {
            let _ = write!(out, "  {cell:>w$}", w = width(i));
        }
        let _ = writeln!(out, "  {}", row.ratio.as_deref().unwrap_or(""));
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
    if !comparison.setting_changes.is_empty() {
        out.push_str("\nSettings that changed between sessions:\n\n");
        render_settings(&mut out, comparison, |name, values| {
            let values: Vec<String> = values.iter().map(|value| text::markdown(value)).collect();
            format!("- {}: {}\n", text::markdown(name), values.join(" → "))
        });
    }
    out
}

/// One session from several (e.g. one per node): events, lost counts and unfinished
/// addresses are combined; the first session's backend and kernel head the result.
pub fn merge(mut sessions: Vec<Session>) -> anyhow::Result<Session> {
    anyhow::ensure!(!sessions.is_empty(), "nothing to merge");
    for session in &mut sessions {
        for event in &mut session.events {
            event.node.get_or_insert_with(|| session.hostname.clone());
        }
        for pod in &mut session.pods {
            pod.node.get_or_insert_with(|| session.hostname.clone());
        }
    }
    let mut merged = sessions.remove(0);
    for session in sessions {
        if !merged.hostname.split('+').any(|host| host == session.hostname) {
            merged.hostname = format!("{}+{}", merged.hostname, session.hostname);
        }
        merged.started_at = merged.started_at.min(session.started_at);
        merged.ended_at = merged.ended_at.max(session.ended_at);
        merged.lost_events = merged.lost_events.checked_add(session.lost_events).with_context(|| {
            format!(
                "lost_events of {} ({}) and the others ({}) add up past 2^64: a corrupt session",
                session.hostname, session.lost_events, merged.lost_events
            )
        })?;
        merged.events.extend(session.events);
        merged.unfinished.extend(session.unfinished);
        merged.pods.extend(session.pods);
        merged.cni = match (merged.cni.take(), session.cni) {
            (Some(mut first), Some(other)) => {
                first.lost_records = first.lost_records.saturating_add(other.lost_records);
                first.env_truncated = first.env_truncated.saturating_add(other.env_truncated);
                first.calls_without_pod.extend(other.calls_without_pod);
                for dir in other.bin_dirs {
                    if !first.bin_dirs.contains(&dir) {
                        first.bin_dirs.push(dir);
                    }
                }
                Some(first)
            }
            (first, other) => first.or(other),
        };
    }
    merged.events.sort_by_key(|event| event.time);
    merged.pods.sort_by_key(|pod| pod.timeline.add_start.or(pod.timeline.first_tentative));
    Ok(merged)
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
                outcome: Outcome::Settled,
                partial: false,
                node: None,
                duplicate_of: Vec::new(),
            });
        }
        session
    }

    #[test]
    fn before_after_shows_ratio_outliers_and_changed_settings() {
        let before = session("node-a", &[1500, 1800, 2000, 1600], "0");
        let after = session("node-a", &[1, 2, 1, 1], "1");
        let comparison = compare(&[("before".into(), before), ("after".into(), after)]);
        assert_eq!(
            comparison.setting_changes,
            [SettingChange {
                name: "net.core.devconf_inherit_init_net".into(),
                values: vec![Some("0".into()), Some("1".into())]
            }]
        );
        assert_eq!(comparison.sessions[0].outliers[0].delay_ns, 2_000_000_000);
        let text = render_text(&comparison);
        assert!(text.contains("tentative p50") && text.contains("6.3e-4x"), "{text}");
        assert!(text.contains("slowest pods in before: node-a-pod2 2.00 s"), "{text}");
        assert!(
            text.contains("setting net.core.devconf_inherit_init_net: 0 -> 1"),
            "{text}"
        );
        assert!(text.contains("(* = before, # = after)"), "{text}");
        assert!(text.contains("1024 -> 2047       : 4     0     |****"), "{text}");
        let markdown = render_markdown(&comparison);
        assert!(
            markdown.starts_with("| metric | before | after | last/first |\n| --- | ---: | ---: | ---: |"),
            "{markdown}"
        );
        assert!(markdown.contains("| DAD p50 | 1.60 s | - |  |"), "{markdown}");
        let json = serde_json::to_value(&comparison).expect("serializable");
        assert_eq!(json["sessions"][1]["summary"]["addresses"], 4);
    }

    /// Names from hostile session files keep every table's shape and the terminal's state.
    #[test]
    fn hostile_names_keep_the_tables() {
        let before = session("a|b\nc\u{1b}[2J", &[1500, 1800], "0");
        let after = session("node-a", &[1, 2], "1");
        let comparison = compare(&[("be|fore".into(), before), ("after".into(), after)]);
        let markdown = render_markdown(&comparison);
        let table: Vec<&str> = markdown.lines().take_while(|line| line.starts_with('|')).collect();
        let columns = |line: &str| line.replace("\\|", "").matches('|').count();
        assert!(table.len() > 20, "{markdown}");
        assert!(
            table.iter().all(|line| columns(line) == columns(table[0])),
            "{markdown}"
        );
        assert!(markdown.contains("| a\\|b\\\\x0ac\\\\x1b\\[2J |"), "{markdown}");
        let text = render_text(&comparison);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("a|b\\x0ac\\x1b[2J"), "{text}");
    }

    #[test]
    fn merge_combines_nodes() {
        let mut a = session("node-a", &[1500, 1800], "0");
        a.lost_events = 1;
        let b = session("node-b", &[1600], "0");
        let merged = merge(vec![a, b]).expect("two sessions");
        assert_eq!(
            (merged.events.len(), merged.lost_events, merged.hostname.as_str()),
            (3, 1, "node-a+node-b")
        );
        assert!(merged.events.windows(2).all(|pair| pair[0].time <= pair[1].time));
        // Same namespace inode on two nodes: two pods, not one.
        assert_eq!(crate::report::pod_delays(&merged.events).len(), 3);
        assert!(merge(Vec::new()).is_err());
        // Counts are never wrapped: u64::MAX + 2 is refused, not shown as 1.
        let mut huge = session("node-c", &[1500], "0");
        huge.lost_events = u64::MAX;
        let mut two = session("node-d", &[1500], "0");
        two.lost_events = 2;
        let error = merge(vec![huge, two]).expect_err("overflow refused");
        assert!(format!("{error:#}").contains("lost_events of node-d"), "{error:#}");
    }
}
