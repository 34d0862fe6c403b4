//! The before/after gate on pod-start DAD, shared by the local CNI/VM scenario and the kind
//! CI job (`dad-trace gate BEFORE AFTER`): the wait is there before tuning, gone after.
//! Which scenario phases are "before" and "after" is the scenario's to say.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    hist::{Delays, human},
    session::{Outcome, Session},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BeforeAfter {
    /// Before tuning, pods must visibly wait: their addresses' tentative p50 is above this.
    pub before_min_p50_ms: u64,
    /// After tuning, the wait is gone: tentative p99 is below this.
    pub after_max_p99_ms: u64,
    /// Each side needs at least this many settled pod addresses: a p50 of one address is an
    /// anecdote, not a distribution.
    pub min_pod_addresses: u64,
}

/// The gate of the kind job and of the local scenario (20 pods a side: 40 pod addresses).
pub const POD_START: BeforeAfter = BeforeAfter {
    before_min_p50_ms: 500,
    after_max_p99_ms: 100,
    min_pod_addresses: 10,
};

/// Tentative delay of the settled addresses in pod namespaces (the host side of a veth is
/// not what a pod waits for).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodTentative {
    pub addresses: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub lost_events: u64,
}

impl PodTentative {
    #[must_use]
    pub fn of(session: &Session) -> Self {
        let summary = Delays::from_values(
            session
                .events
                .iter()
                .filter(|event| !event.host_netns && event.outcome == Outcome::Settled)
                .map(|event| event.tentative_ns),
        )
        .summary();
        Self {
            addresses: summary.map_or(0, |s| s.count),
            p50_ns: summary.map_or(0, |s| s.p50_ns),
            p99_ns: summary.map_or(0, |s| s.p99_ns),
            lost_events: session.lost_events,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateResult {
    pub gate: BeforeAfter,
    pub before: PodTentative,
    pub after: PodTentative,
    /// Empty when the gate passed.
    pub problems: Vec<String>,
}

impl BeforeAfter {
    #[must_use]
    pub fn check(self, before: &Session, after: &Session) -> GateResult {
        let before = PodTentative::of(before);
        let after = PodTentative::of(after);
        let mut problems = Vec::new();
        for (label, side) in [("before", &before), ("after", &after)] {
            if side.addresses < self.min_pod_addresses {
                problems.push(format!(
                    "{label}: {} pod addresses traced, the gate needs at least {}",
                    side.addresses, self.min_pod_addresses
                ));
            }
            if side.lost_events > 0 {
                problems.push(format!("{label}: {} events lost, figures incomplete", side.lost_events));
            }
        }
        if before.addresses > 0 && before.p50_ns <= self.before_min_p50_ms * 1_000_000 {
            problems.push(format!(
                "before: tentative p50 {} is not above {} ms: pods did not wait for DAD, so the run shows nothing",
                human(before.p50_ns),
                self.before_min_p50_ms
            ));
        }
        if after.addresses > 0 && after.p99_ns >= self.after_max_p99_ms * 1_000_000 {
            problems.push(format!(
                "after: tentative p99 {} is not below {} ms: the tuning did not reach the pods",
                human(after.p99_ns),
                self.after_max_p99_ms
            ));
        }
        GateResult {
            gate: self,
            before,
            after,
            problems,
        }
    }
}

impl GateResult {
    #[must_use]
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// A markdown table (readable as text too), then the verdict.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out =
            String::from("| | pod addresses | tentative p50 | tentative p99 | gate |\n|---|---:|---:|---:|---|\n");
        let _ = writeln!(
            out,
            "| before | {} | {} | {} | p50 > {} ms |",
            self.before.addresses,
            human(self.before.p50_ns),
            human(self.before.p99_ns),
            self.gate.before_min_p50_ms
        );
        let _ = writeln!(
            out,
            "| after | {} | {} | {} | p99 < {} ms |",
            self.after.addresses,
            human(self.after.p50_ns),
            human(self.after.p99_ns),
            self.gate.after_max_p99_ms
        );
        if self.passed() {
            out.push_str("\nGate passed.\n");
        } else {
            out.push_str("\nGate FAILED:\n");
            for problem in &self.problems {
                let _ = writeln!(out, "- {problem}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(name: &str) -> Session {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        Session::load(&path).expect("fixture")
    }

    #[test]
    fn recorded_before_and_after_pass() {
        let result = POD_START.check(&fixture("default-20-pods.json"), &fixture("tuned-20-pods.json"));
        assert!(result.passed(), "{}", result.render());
        assert_eq!(result.before.addresses, 40);
        assert!(result.before.p50_ns > 500_000_000);
        assert!(result.render().contains("Gate passed."));
    }

    #[test]
    fn swapped_sessions_fail_both_ways() {
        let result = POD_START.check(&fixture("tuned-20-pods.json"), &fixture("default-20-pods.json"));
        assert_eq!(result.problems.len(), 2, "{:?}", result.problems);
        assert!(result.problems[0].starts_with("before: tentative p50"));
        assert!(result.problems[1].starts_with("after: tentative p99"));
        assert!(result.render().contains("Gate FAILED"));
    }

    #[test]
    fn too_few_addresses_fail_even_when_the_numbers_look_right() {
        let mut before = fixture("default-20-pods.json");
        let pod_addresses: Vec<usize> = before
            .events
            .iter()
            .enumerate()
            .filter(|(_, event)| !event.host_netns)
            .map(|(index, _)| index)
            .collect();
        // Keep 9 pod addresses (and every host one): one short of the minimum.
        let keep: std::collections::HashSet<usize> = pod_addresses.iter().copied().take(9).collect();
        let mut index = 0;
        before.events.retain(|event| {
            let kept = event.host_netns || keep.contains(&index);
            index += 1;
            kept
        });
        let result = POD_START.check(&before, &fixture("tuned-20-pods.json"));
        assert_eq!(
            result.problems,
            ["before: 9 pod addresses traced, the gate needs at least 10"],
            "p50 of the 9 is still above 500 ms"
        );
        assert!(result.before.p50_ns > 500_000_000);
    }

    #[test]
    fn empty_or_lossy_sessions_fail() {
        let mut after = fixture("tuned-20-pods.json");
        after.lost_events = 3;
        let mut before = fixture("default-20-pods.json");
        before.events.clear();
        let problems = POD_START.check(&before, &after).problems;
        assert!(problems.contains(&"before: 0 pod addresses traced, the gate needs at least 10".to_string()));
        assert!(problems.contains(&"after: 3 events lost, figures incomplete".to_string()));
    }
}
