//! What the tentative wait cost applications: their socket errors (`EADDRNOTAVAIL`), per
//! pod, split into those a tentative address explains and the rest.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{hist::human, session::SocketError, text::terminal};

/// Pods listed per session, most failures first.
const LISTED: usize = 10;
/// Processes named per pod.
const NAMED: usize = 3;

/// One pod's socket errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodSocketErrors {
    pub pod: String,
    /// Failures while an address of the pod was tentative, by syscall.
    pub during_dad: BTreeMap<String, u64>,
    /// Failures no tentative address explains.
    pub other: u64,
    /// The longest an address had been tentative at a first failure.
    pub tentative_for_ns: Option<u64>,
    /// `comm[pid]` of the processes that failed, the first few.
    pub processes: Vec<String>,
}

impl PodSocketErrors {
    fn during_dad_total(&self) -> u64 {
        self.during_dad.values().sum()
    }
}

/// A session's socket errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketSummary {
    /// Whether the session counted them (an older session, or a kernel that refused the
    /// program, did not: then there is nothing to say, not zero).
    pub traced: bool,
    pub during_dad: BTreeMap<String, u64>,
    pub other: u64,
    /// Pods with a failure during DAD.
    pub pods_during_dad: usize,
    /// Most failures during DAD first, then the most others; at most [`LISTED`].
    pub pods: Vec<PodSocketErrors>,
}

/// Sums `errors` per pod.
#[must_use]
pub fn summarize(errors: &[SocketError], traced: bool) -> SocketSummary {
    let mut pods: BTreeMap<String, PodSocketErrors> = BTreeMap::new();
    for error in errors {
        let label = error.label();
        let pod = pods.entry(label.clone()).or_insert_with(|| PodSocketErrors {
            pod: label,
            ..PodSocketErrors::default()
        });
        if error.during_dad() {
            *pod.during_dad.entry(error.syscall.clone()).or_default() += error.count;
            pod.tentative_for_ns = pod.tentative_for_ns.max(error.tentative_for_ns);
        } else {
            pod.other += error.count;
        }
        let process = format!("{}[{}]", error.comm, error.pid);
        if pod.processes.len() < NAMED && !pod.processes.contains(&process) {
            pod.processes.push(process);
        }
    }
    let mut summary = SocketSummary {
        traced,
        ..SocketSummary::default()
    };
    for pod in pods.values() {
        for (syscall, count) in &pod.during_dad {
            *summary.during_dad.entry(syscall.clone()).or_default() += count;
        }
        summary.other += pod.other;
        summary.pods_during_dad += usize::from(pod.during_dad_total() > 0);
    }
    let mut listed: Vec<PodSocketErrors> = pods.into_values().collect();
    listed.sort_by_key(|pod| std::cmp::Reverse((pod.during_dad_total(), pod.other)));
    listed.truncate(LISTED);
    summary.pods = listed;
    summary
}

/// `12 failed binds, 1 failed connect` (or `none`).
fn counts(by_syscall: &BTreeMap<String, u64>) -> String {
    // Every entry counts at least one failure: the kernel makes a key at its first.
    let parts: Vec<String> = by_syscall
        .iter()
        .map(|(syscall, count)| {
            let plural = if *count == 1 { "" } else { "s" };
            format!("{count} failed {}{plural}", terminal(syscall))
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

impl SocketSummary {
    /// One line for a comparison's cell or a sentence: what failed during DAD, in how many
    /// pods.
    #[must_use]
    pub fn during_dad_line(&self) -> String {
        if !self.traced {
            return "not traced".into();
        }
        match self.pods_during_dad {
            0 => "none".into(),
            pods => format!(
                "{} in {pods} pod{}",
                counts(&self.during_dad),
                if pods == 1 { "" } else { "s" }
            ),
        }
    }
}

/// The report's section: per pod, what failed during DAD and what did not.
#[must_use]
pub fn render_text(summary: &SocketSummary) -> String {
    let mut out = String::from("\nApplication socket errors (EADDRNOTAVAIL):\n");
    if !summary.traced {
        out.push_str("  not traced in this session (see `dad-trace probes`)\n");
        return out;
    }
    let _ = writeln!(out, "  during DAD: {}", summary.during_dad_line());
    if summary.other > 0 {
        let _ = writeln!(
            out,
            "  not DAD's doing (no tentative address in the pod then): {}",
            summary.other
        );
    }
    for pod in &summary.pods {
        let tentative = pod
            .tentative_for_ns
            .map(|ns| format!(", the address tentative {} at the first", human(ns)))
            .unwrap_or_default();
        let processes: Vec<String> = pod.processes.iter().map(|p| terminal(p).into_owned()).collect();
        let other = if pod.other > 0 {
            format!("; {} not DAD's", pod.other)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {}: {} by {}{tentative}{other}",
            terminal(&pod.pod),
            counts(&pod.during_dad),
            processes.join(", "),
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::session::Pod;

    pub(crate) fn error(netns: &str, syscall: &str, count: u64, tentative_ms: Option<u64>) -> SocketError {
        SocketError {
            syscall: syscall.into(),
            errno: "EADDRNOTAVAIL".into(),
            comm: "server".into(),
            pid: 40,
            container_id: None,
            netns_inode: 4_026_532_500,
            netns_name: Some(netns.into()),
            host_netns: false,
            pod: None,
            addr: Some("fd00::1".parse().expect("literal")),
            count,
            time: "2026-12-06T18:00:00Z".parse().expect("literal"),
            first_ns: 1_000,
            last_ns: 2_000,
            tentative_for_ns: tentative_ms.map(|ms| ms * 1_000_000),
            tentative_addr: tentative_ms.map(|_| "fd00::1".parse().expect("literal")),
        }
    }

    #[test]
    fn errors_sum_per_pod_and_syscall_split_by_cause() {
        let mut named = error("ns-b", "bind", 5, Some(300));
        named.pod = Some(Pod {
            namespace: Some("team".into()),
            name: Some("web".into()),
            ..Pod::default()
        });
        named.comm = "web\x1b[2J".into();
        let errors = [
            error("ns-a", "bind", 12, Some(100)),
            error("ns-a", "connect", 1, Some(700)),
            error("ns-a", "bind", 2, None),
            named,
            error("ns-c", "sendto", 4, None),
        ];
        let summary = summarize(&errors, true);
        assert_eq!(
            summary.during_dad,
            BTreeMap::from([("bind".to_string(), 17), ("connect".to_string(), 1)])
        );
        assert_eq!((summary.other, summary.pods_during_dad), (6, 2));
        let order: Vec<&str> = summary.pods.iter().map(|pod| pod.pod.as_str()).collect();
        assert_eq!(order, ["ns-a", "team/web", "ns-c"]);
        let first = &summary.pods[0];
        assert_eq!((first.other, first.tentative_for_ns), (2, Some(700_000_000)));
        assert_eq!(first.processes, ["server[40]"], "one process named once");
        assert_eq!(summary.during_dad_line(), "17 failed binds, 1 failed connect in 2 pods");
        let text = render_text(&summary);
        assert!(
            text.contains("  during DAD: 17 failed binds, 1 failed connect in 2 pods\n"),
            "{text}"
        );
        assert!(
            text.contains("not DAD's doing (no tentative address in the pod then): 6\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  ns-a: 12 failed binds, 1 failed connect by server[40], the address tentative 700.0 ms at the first; 2 not DAD's\n"
            ),
            "{text}"
        );
        assert!(text.contains("  ns-c: none by server[40]; 4 not DAD's\n"), "{text}");
        assert!(
            text.contains(
                "  team/web: 5 failed binds by web\\x1b[2J[40], the address tentative 300.0 ms at the first\n"
            ),
            "nothing said of what was not DAD's when there is none: {text}"
        );
        assert!(!text.contains('\x1b'), "names are escaped: {text}");
    }

    #[test]
    fn untraced_empty_and_long_lists() {
        let untraced = summarize(&[], false);
        assert_eq!(untraced.during_dad_line(), "not traced");
        assert!(render_text(&untraced).contains("not traced in this session"));
        let none = summarize(&[], true);
        assert_eq!(none.during_dad_line(), "none");
        assert_eq!(
            render_text(&none),
            "\nApplication socket errors (EADDRNOTAVAIL):\n  during DAD: none\n"
        );
        let one = summarize(&[error("ns-a", "bind", 1, Some(1))], true);
        assert_eq!(one.during_dad_line(), "1 failed bind in 1 pod");
        let many: Vec<SocketError> = (0..15)
            .map(|index| {
                let mut error = error(&format!("ns-{index:02}"), "bind", index + 1, Some(1));
                error.pid = u32::try_from(index).expect("small");
                error
            })
            .collect();
        let summary = summarize(&many, true);
        assert_eq!(summary.pods.len(), LISTED);
        assert_eq!(summary.pods[0].pod, "ns-14", "most failures first");
        assert_eq!(summary.pods_during_dad, 15, "counted beyond the listed");
        let mut crowded: Vec<SocketError> = (0..5)
            .map(|pid| SocketError {
                pid,
                ..error("ns-a", "bind", 1, Some(1))
            })
            .collect();
        crowded.push(error("ns-a", "bind", 1, Some(1)));
        assert_eq!(summarize(&crowded, true).pods[0].processes.len(), NAMED);
    }
}
