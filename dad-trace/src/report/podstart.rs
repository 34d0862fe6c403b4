//! Pod start from a session's `pods[]`: how long CNI ADDs, DAD waits and pod starts took
//! (p50/p90/p99/max), DAD's share of each, and the slowest pods with their timelines.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::pod_settings::{self, SettingsSummary};
use crate::{
    hist::{Delays, Summary, human, human_ms},
    session::{PodSettings, PodStart, Session},
    text::terminal,
};

/// How many of the slowest pods are shown with their timeline.
pub const SLOWEST: usize = 5;

/// Percentiles of a share (0.0-1.0) over pods, nearest rank.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Shares {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Shares {
    #[must_use]
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().filter(|value| value.is_finite()).collect();
        values.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least that share of values at or below it.
        let rank = |permille: usize| values[(values.len() * permille).div_ceil(1000).clamp(1, values.len()) - 1];
        (!values.is_empty()).then(|| Self {
            count: values.len(),
            p50: rank(500),
            p90: rank(900),
            p99: rank(990),
            max: rank(1000),
        })
    }
}

/// One pod, as the tables show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodRow {
    pub pod: String,
    pub netns_inode: u32,
    pub cni_add_ns: Option<u64>,
    pub dad_wait_ns: Option<u64>,
    pub pod_start_ns: Option<u64>,
    pub dad_share_of_add: Option<f64>,
    pub dad_share_of_start: Option<f64>,
    /// Milliseconds from the pod's first known moment: `(what, ms)`, in time order.
    pub timeline: Vec<(&'static str, f64)>,
    /// Its namespace's own DAD settings, when read.
    pub settings: Option<PodSettings>,
}

/// The pod-start part of a session's summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PodStartSummary {
    pub pods: usize,
    pub cni_add: Option<Summary>,
    pub dad_wait: Option<Summary>,
    pub pod_start: Option<Summary>,
    pub dad_share_of_add: Option<Shares>,
    pub dad_share_of_start: Option<Shares>,
    /// The slowest pods (by pod start, else CNI ADD, else DAD wait), slowest first.
    pub slowest: Vec<PodRow>,
    /// CNI calls that failed (exit status not 0, or killed), top-level.
    pub failed_calls: usize,
    /// The pods' own DAD settings, when any were read.
    pub settings: Option<SettingsSummary>,
}

impl PodStartSummary {
    /// Whether there is anything about pod start to say (sessions recorded without CNI
    /// tracing and without a runtime have only DAD waits, shown elsewhere).
    #[must_use]
    pub fn has_start_data(&self) -> bool {
        self.cni_add.is_some() || self.pod_start.is_some()
    }
}

/// The moments of a pod's start, in time order, in ms from the first of them.
#[must_use]
pub fn timeline(pod: &PodStart) -> Vec<(&'static str, f64)> {
    let line = &pod.timeline;
    let moments: Vec<(&'static str, DateTime<Utc>)> = [
        ("sandbox created", line.sandbox_created),
        ("ADD start", line.add_start),
        ("first tentative", line.first_tentative),
        ("last settled", line.last_settled),
        ("ADD end", line.add_end),
        ("container started", line.container_started),
    ]
    .into_iter()
    .filter_map(|(what, at)| Some((what, at?)))
    .collect();
    let Some(origin) = moments.iter().map(|(_, at)| *at).min() else {
        return Vec::new();
    };
    let mut rows: Vec<(&'static str, f64)> = moments
        .into_iter()
        .map(|(what, at)| {
            let ms = (at - origin).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
            (what, ms)
        })
        .collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    rows
}

fn row(pod: &PodStart) -> PodRow {
    PodRow {
        pod: pod.label(),
        netns_inode: pod.netns_inode,
        cni_add_ns: pod.cni_add_ns,
        dad_wait_ns: pod.dad_wait_ns,
        pod_start_ns: pod.pod_start_ns,
        dad_share_of_add: pod.dad_share_of_add(),
        dad_share_of_start: pod.dad_share_of_start(),
        timeline: timeline(pod),
        settings: pod.settings.clone(),
    }
}

#[must_use]
pub fn summarize<E>(session: &Session<E>) -> PodStartSummary {
    let pods = &session.pods;
    let delays = |pick: fn(&PodStart) -> Option<u64>| Delays::from_values(pods.iter().filter_map(pick)).summary();
    let mut slowest: Vec<&PodStart> = pods.iter().collect();
    slowest.sort_by_key(|pod| std::cmp::Reverse((pod.pod_start_ns, pod.cni_add_ns, pod.dad_wait_ns)));
    slowest.truncate(SLOWEST);
    PodStartSummary {
        pods: pods.len(),
        cni_add: delays(|pod| pod.cni_add_ns),
        dad_wait: delays(|pod| pod.dad_wait_ns),
        pod_start: delays(|pod| pod.pod_start_ns),
        dad_share_of_add: Shares::of(pods.iter().filter_map(PodStart::dad_share_of_add)),
        dad_share_of_start: Shares::of(pods.iter().filter_map(PodStart::dad_share_of_start)),
        slowest: slowest.into_iter().map(row).collect(),
        failed_calls: pods
            .iter()
            .flat_map(|pod| &pod.cni_calls)
            .filter(|call| call.duration_ns.is_some() && call.exit_status != Some(0))
            .count(),
        settings: pod_settings::summarize(pods, &session.sysctls_start),
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// The table's rows: name, count, p50, p90, p99, max (cells as text).
#[must_use]
pub fn table_rows(summary: &PodStartSummary) -> Vec<[String; 6]> {
    // A row without values: none of the pods had it.
    let empty = |name: &str| {
        [
            name.to_string(),
            "0".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]
    };
    let delay = |name: &str, summary: Option<Summary>| match summary {
        Some(s) => [
            name.to_string(),
            s.count.to_string(),
            human(s.p50_ns),
            human(s.p90_ns),
            human(s.p99_ns),
            human(s.max_ns),
        ],
        None => empty(name),
    };
    let share = |name: &str, shares: Option<Shares>| match shares {
        Some(s) => [
            name.to_string(),
            s.count.to_string(),
            percent(s.p50),
            percent(s.p90),
            percent(s.p99),
            percent(s.max),
        ],
        None => empty(name),
    };
    vec![
        delay("CNI ADD", summary.cni_add),
        delay("DAD wait", summary.dad_wait),
        delay("pod start", summary.pod_start),
        share("DAD share of ADD", summary.dad_share_of_add),
        share("DAD share of start", summary.dad_share_of_start),
    ]
}

fn cell(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), human)
}

/// The terminal section: the table, then the slowest pods with their timeline.
#[must_use]
pub fn render_text(summary: &PodStartSummary) -> String {
    let mut out = String::new();
    if summary.pods == 0 {
        return out;
    }
    let _ = writeln!(
        out,
        "\nPod start, {} pods (CNI ADD: runtime forks the plugin -> its last exit; DAD wait: inside the ADD; \
         pod start: sandbox created -> first container started):",
        summary.pods
    );
    let _ = writeln!(
        out,
        "  {:<20} {:>5} {:>10} {:>10} {:>10} {:>10}",
        "", "count", "p50", "p90", "p99", "max"
    );
    for [name, count, p50, p90, p99, max] in table_rows(summary) {
        let _ = writeln!(out, "  {name:<20} {count:>5} {p50:>10} {p90:>10} {p99:>10} {max:>10}");
    }
    if summary.failed_calls > 0 {
        let _ = writeln!(out, "  CNI calls that failed: {}", summary.failed_calls);
    }
    if let Some(settings) = &summary.settings {
        out.push_str(&pod_settings::render_text(settings));
    }
    let host_dad_off = summary.settings.as_ref().is_some_and(|settings| settings.host_dad_off);
    out.push_str("Slowest pods:\n");
    for pod in &summary.slowest {
        let shares = [
            pod.dad_share_of_add.map(|s| format!("{} of ADD", percent(s))),
            pod.dad_share_of_start.map(|s| format!("{} of start", percent(s))),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let _ = writeln!(
            out,
            "  {}  start {}  ADD {}  DAD {}{}",
            terminal(&pod.pod),
            cell(pod.pod_start_ns),
            cell(pod.cni_add_ns),
            cell(pod.dad_wait_ns),
            if shares.is_empty() {
                String::new()
            } else {
                format!(" ({shares})")
            }
        );
        let steps: Vec<String> = pod
            .timeline
            .iter()
            .map(|(what, ms)| format!("{what} +{}", human_ms(*ms)))
            .collect();
        if !steps.is_empty() {
            let _ = writeln!(out, "      {}", steps.join(" -> "));
        }
        if let Some(settings) = &pod.settings {
            let _ = writeln!(out, "      {}", pod_settings::line(settings, host_dad_off));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::session::{CniCall, Pod, Timeline};

    pub(crate) fn at(ms: i64) -> DateTime<Utc> {
        "2026-11-25T20:00:00Z".parse::<DateTime<Utc>>().expect("literal") + chrono::Duration::milliseconds(ms)
    }

    /// A pod: sandbox at 0, ADD from 10 ms for `add_ms`, DAD inside it, container 50 ms later.
    pub(crate) fn pod(inode: u32, add_ms: u64, dad_ms: u64) -> PodStart {
        let add_end = 10 + i64::try_from(add_ms).expect("small");
        let ms = 1_000_000;
        PodStart {
            netns_inode: inode,
            netns_cookie: None,
            netns_name: Some(format!("cni-{inode}")),
            pod: Some(Pod {
                namespace: Some("team-a".into()),
                name: Some(format!("web-{inode}")),
                ..Pod::default()
            }),
            node: None,
            cni_add_ns: Some(add_ms * ms),
            dad_wait_ns: Some(dad_ms * ms),
            waited_while_usable_ns: None,
            pod_start_ns: Some(u64::try_from(add_end + 50).expect("positive") * ms),
            timeline: Timeline {
                sandbox_created: Some(at(0)),
                add_start: Some(at(10)),
                add_end: Some(at(add_end)),
                first_tentative: Some(at(15)),
                last_settled: Some(at(15 + i64::try_from(dad_ms).expect("small"))),
                container_started: Some(at(add_end + 50)),
            },
            cni_calls: vec![CniCall {
                command: Some("ADD".into()),
                plugin: "/usr/lib/cni/ptp".into(),
                container_id: Some(format!("sandbox-{inode}")),
                netns: Some(format!("/run/netns/cni-{inode}")),
                ifname: Some("eth0".into()),
                pid: 100 + inode,
                ppid: 1,
                start: at(10),
                duration_ns: Some(add_ms * ms),
                exit_status: Some(0),
                exit_signal: None,
                env_truncated: false,
                trace_parent: None,
                trace_state: None,
                delegates: Vec::new(),
            }],
            settings: None,
        }
    }

    #[test]
    fn the_table_and_the_slowest_pods_with_their_timeline() {
        let mut session = crate::report::summary::tests::session(Vec::new());
        session.pods = vec![pod(1, 1950, 1900), pod(2, 40, 0), pod(3, 1500, 1400)];
        session.pods[1].cni_calls[0].exit_status = Some(1);
        let summary = summarize(&session);
        assert_eq!(summary.cni_add.expect("ADDs").count, 3);
        assert!((summary.dad_share_of_add.expect("shares").max - 1900.0 / 1950.0).abs() < 1e-12);
        assert_eq!(summary.slowest[0].pod, "team-a/web-1");
        assert_eq!(summary.failed_calls, 1);
        assert_eq!(
            summary.slowest[0].timeline.first(),
            Some(&("sandbox created", 0.0)),
            "{:?}",
            summary.slowest[0].timeline
        );
        assert_eq!(summary.slowest[0].timeline.last(), Some(&("container started", 2010.0)));
        let text = render_text(&summary);
        assert!(
            text.contains("CNI ADD") && text.contains("1.95 s") && text.contains("DAD share of ADD"),
            "{text}"
        );
        assert!(
            text.contains("team-a/web-1  start 2.01 s  ADD 1.95 s  DAD 1.90 s (97% of ADD, 95% of start)"),
            "{text}"
        );
        assert!(text.contains("sandbox created +0 us -> ADD start +10.0 ms"), "{text}");
        assert!(!text.contains("settings"), "none read: {text}");
    }

    /// The pods' own settings: counted under the table, and a line under each slowest pod.
    #[test]
    fn the_pods_own_settings_are_counted_and_shown() {
        let mut session = crate::report::summary::tests::session(Vec::new());
        session.sysctls_start = [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        let fresh = PodSettings {
            default: crate::session::settings::ConfValues {
                accept_dad: Some(1),
                ..Default::default()
            },
            ..PodSettings::default()
        };
        session.pods = vec![pod(1, 1950, 1900), pod(2, 40, 0)];
        session.pods[0].settings = Some(fresh);
        let text = render_text(&summarize(&session));
        assert!(text.contains("DAD on in 1, off in 0, unknown in 0"), "{text}");
        assert!(text.contains("Host tuning did not reach 1 pods"), "{text}");
        assert!(
            text.contains("      settings: all.accept_dad=?; default accept_dad=1")
                && text.contains("this namespace\n"),
            "{text}"
        );
        assert_eq!(text.matches("settings:").count(), 1, "pod 2 has none: {text}");
    }

    #[test]
    fn hostile_pod_names_are_escaped_and_empty_sessions_say_nothing() {
        let mut session = crate::report::summary::tests::session(Vec::new());
        assert_eq!(render_text(&summarize(&session)), "");
        let mut hostile = pod(1, 100, 50);
        hostile.pod = None;
        hostile.netns_name = Some("cni-\u{1b}[2J".into());
        session.pods = vec![hostile];
        let text = render_text(&summarize(&session));
        assert!(text.contains("cni-\\x1b[2J") && !text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn share_percentiles_use_the_nearest_rank() {
        let shares = Shares::of([0.1, 0.9, 0.5, f64::NAN]).expect("three");
        assert_eq!((shares.count, shares.p50, shares.p90, shares.max), (3, 0.5, 0.9, 0.9));
        assert!(Shares::of([]).is_none());
    }

    #[test]
    fn share_percentiles_are_distinct_ranks() {
        let shares = Shares::of((1..=200).map(f64::from)).expect("values");
        assert_eq!(
            (shares.count, shares.p50, shares.p90, shares.p99, shares.max),
            (200, 100.0, 180.0, 198.0, 200.0)
        );
        let one = Shares::of([0.25]).expect("one");
        assert_eq!((one.p50, one.max), (0.25, 0.25));
    }

    #[test]
    fn the_table_has_every_row_and_cell() {
        let mut session = crate::report::summary::tests::session(Vec::new());
        session.pods = vec![pod(1, 1950, 1900), pod(2, 40, 0), pod(3, 1500, 1400)];
        let summary = summarize(&session);
        assert!(summary.has_start_data());
        let row = |cells: [&str; 6]| cells.map(String::from);
        assert_eq!(
            table_rows(&summary),
            [
                row(["CNI ADD", "3", "1.50 s", "1.95 s", "1.95 s", "1.95 s"]),
                row(["DAD wait", "3", "1.40 s", "1.90 s", "1.90 s", "1.90 s"]),
                row(["pod start", "3", "1.56 s", "2.01 s", "2.01 s", "2.01 s"]),
                row(["DAD share of ADD", "3", "93%", "97%", "97%", "97%"]),
                row(["DAD share of start", "3", "90%", "95%", "95%", "95%"]),
            ]
        );
        assert_eq!(summary.failed_calls, 0);
        let text = render_text(&summary);
        assert!(!text.contains("failed"), "{text}");
        assert!(text.contains("Pod start, 3 pods"), "{text}");
        let empty = PodStartSummary::default();
        assert!(!empty.has_start_data());
        assert_eq!(
            table_rows(&empty)[4],
            row(["DAD share of start", "0", "-", "-", "-", "-"])
        );
        assert!(
            PodStartSummary {
                cni_add: summary.cni_add,
                ..PodStartSummary::default()
            }
            .has_start_data()
        );
        assert!(
            PodStartSummary {
                pod_start: summary.pod_start,
                ..PodStartSummary::default()
            }
            .has_start_data()
        );
        assert!(
            !PodStartSummary {
                dad_wait: summary.dad_wait,
                ..PodStartSummary::default()
            }
            .has_start_data(),
            "DAD waits alone are shown elsewhere"
        );
    }

    /// A call still running (no duration) has not failed, nor one that exited 0; a killed one
    /// (no exit status) has.
    #[test]
    fn failed_calls_are_finished_top_level_calls_not_exiting_0() {
        let mut session = crate::report::summary::tests::session(Vec::new());
        let mut running = pod(1, 100, 50);
        running.cni_calls[0].duration_ns = None;
        running.cni_calls[0].exit_status = None;
        let mut killed = pod(2, 100, 50);
        killed.cni_calls[0].exit_status = None;
        killed.cni_calls[0].exit_signal = Some(9);
        let mut failed = pod(3, 100, 50);
        failed.cni_calls[0].exit_status = Some(1);
        failed.cni_calls.push(pod(3, 100, 50).cni_calls[0].clone());
        session.pods = vec![running, killed, failed, pod(4, 100, 50)];
        let summary = summarize(&session);
        assert_eq!(summary.failed_calls, 2);
        assert!(render_text(&summary).contains("  CNI calls that failed: 2\n"));
    }

    /// Pods with nothing but a DAD wait: no shares in parentheses, no timeline line; the
    /// slowest are by pod start, then ADD, then DAD wait, at most [`SLOWEST`].
    #[test]
    fn slowest_pods_order_and_bare_rows() {
        let mut session = crate::report::summary::tests::session(Vec::new());
        let bare = |inode: u32, dad_ms: u64| {
            let mut pod = pod(inode, 100, dad_ms);
            pod.cni_add_ns = None;
            pod.pod_start_ns = None;
            pod.timeline = Timeline::default();
            pod
        };
        session.pods = (1..=7).map(|inode| bare(inode, u64::from(inode))).collect();
        session.pods[0].cni_add_ns = Some(1);
        let summary = summarize(&session);
        let order: Vec<u32> = summary.slowest.iter().map(|pod| pod.netns_inode).collect();
        assert_eq!(order, [1, 7, 6, 5, 4], "an ADD beats any DAD wait");
        let text = render_text(&summary);
        assert!(
            text.contains("  team-a/web-7  start -  ADD -  DAD 7.0 ms\n  team-a/web-6"),
            "{text}"
        );
        assert!(text.ends_with("DAD 4.0 ms\n"), "{text}");
    }
}
