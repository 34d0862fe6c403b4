//! The before/after gate on pod-start DAD, shared by the local CNI/VM scenario and the kind
//! CI job (`dad-trace gate BEFORE AFTER`): the wait is there before tuning, gone after.
//! Which scenario phases are "before" and "after" is the scenario's to say.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::fmt::Write as _;

use serde::Serialize;

use super::{
    figures::Figures,
    significance::{ALPHA, ChangeTest, Direction},
};
use crate::{
    hist::{Delays, human},
    session::Session,
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
    /// The per-pod delay must be shorter after, and the difference real (Kolmogorov–Smirnov,
    /// p below 1 %). Off in the shared gate: its thresholds are absolute and far apart, which
    /// noise cannot pass on 20 pods a side; for gates with loose thresholds.
    pub require_change: bool,
    /// Before tuning, pods' CNI ADD p50 is above this (the ADD waited for DAD); not gated
    /// when `None`.
    pub before_min_cni_add_p50_ms: Option<u64>,
    /// After tuning, pods' CNI ADD p99 is below this; not gated when `None`.
    pub after_max_cni_add_p99_ms: Option<u64>,
    /// With a CNI ADD gate, each side needs at least this many pods with a traced ADD.
    pub min_cni_adds: u64,
}

/// The gate of the kind job and of the local scenario (20 pods a side: 40 pod addresses),
/// on the addresses' tentative delay.
pub const POD_START: BeforeAfter = BeforeAfter {
    before_min_p50_ms: 500,
    after_max_p99_ms: 100,
    min_pod_addresses: 10,
    require_change: false,
    before_min_cni_add_p50_ms: None,
    after_max_cni_add_p99_ms: None,
    min_cni_adds: 10,
};

/// The same, and on the CNI ADD where a CNI plugin sets pods up (the scenario with ptp or
/// bridge, the kind job): with DAD every ADD waits at least the 1 s probe (the random start
/// delay comes on top); without, an ADD stays well under the probe, even in emulated guests.
pub const POD_START_WITH_CNI: BeforeAfter = BeforeAfter {
    before_min_cni_add_p50_ms: Some(900),
    after_max_cni_add_p99_ms: Some(500),
    ..POD_START
};

impl BeforeAfter {
    /// The `dad-trace gate` flags of this gate's CNI ADD limits (what `scenario --list`
    /// hands the kind job, so both judge alike).
    #[must_use]
    pub fn cni_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(ms) = self.before_min_cni_add_p50_ms {
            flags.extend(["--before-min-cni-add-p50-ms".to_string(), ms.to_string()]);
        }
        if let Some(ms) = self.after_max_cni_add_p99_ms {
            flags.extend(["--after-max-cni-add-p99-ms".to_string(), ms.to_string()]);
        }
        flags.extend(["--min-cni-adds".to_string(), self.min_cni_adds.to_string()]);
        flags
    }
}

/// CNI ADD time of the pods of a session (those with a traced ADD).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodAdds {
    pub pods: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

impl PodAdds {
    #[must_use]
    pub fn of<E>(session: &Session<E>) -> Self {
        let summary = Delays::from_values(session.pods.iter().filter_map(|pod| pod.cni_add_ns)).summary();
        Self {
            pods: summary.map_or(0, |s| s.count),
            p50_ns: summary.map_or(0, |s| s.p50_ns),
            p99_ns: summary.map_or(0, |s| s.p99_ns),
        }
    }
}

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
    pub fn of(session: &Session<Figures>) -> Self {
        let summary = Delays::from_values(session.events.pod_tentative()).summary();
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
    /// Per-pod delay after against before (always shown; a condition with `require_change`).
    pub change: Option<ChangeTest>,
    /// The sides' CNI ADD times, when the gate looks at them.
    pub before_cni_add: Option<PodAdds>,
    pub after_cni_add: Option<PodAdds>,
    /// Empty when the gate passed.
    pub problems: Vec<String>,
}

impl BeforeAfter {
    #[must_use]
    pub fn check(self, before_session: &Session<Figures>, after_session: &Session<Figures>) -> GateResult {
        let before = PodTentative::of(before_session);
        let after = PodTentative::of(after_session);
        let delays = |session: &Session<Figures>| -> Vec<u64> {
            session.events.pod_delays().iter().map(|pod| pod.delay_ns).collect()
        };
        let (before_pods, after_pods) = (delays(before_session), delays(after_session));
        let change = ChangeTest::of(&before_pods, &after_pods, ALPHA);
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
        if self.require_change {
            match &change {
                None => problems.push(format!(
                    "per-pod delay: cannot tell whether it changed: {} has no pods",
                    if before_pods.is_empty() { "before" } else { "after" }
                )),
                Some(test) if !test.significant || test.direction != Direction::Faster => {
                    problems.push(format!("per-pod delay: {}", test.sentence()));
                }
                Some(_) => {}
            }
        }
        let gated = self.before_min_cni_add_p50_ms.is_some() || self.after_max_cni_add_p99_ms.is_some();
        let (before_cni_add, after_cni_add) = if gated {
            let (before_adds, after_adds) = (PodAdds::of(before_session), PodAdds::of(after_session));
            self.check_adds(&before_adds, &after_adds, &mut problems);
            (Some(before_adds), Some(after_adds))
        } else {
            (None, None)
        };
        GateResult {
            gate: self,
            before,
            after,
            change,
            before_cni_add,
            after_cni_add,
            problems,
        }
    }

    fn check_adds(self, before: &PodAdds, after: &PodAdds, problems: &mut Vec<String>) {
        for (label, side) in [("before", before), ("after", after)] {
            if side.pods < self.min_cni_adds {
                problems.push(format!(
                    "{label}: {} pods with a traced CNI ADD, the gate needs at least {} (were CNI calls traced?)",
                    side.pods, self.min_cni_adds
                ));
            }
        }
        if let Some(min) = self.before_min_cni_add_p50_ms
            && before.pods > 0
            && before.p50_ns <= min * 1_000_000
        {
            problems.push(format!(
                "before: CNI ADD p50 {} is not above {min} ms: the ADDs did not wait for DAD",
                human(before.p50_ns)
            ));
        }
        if let Some(max) = self.after_max_cni_add_p99_ms
            && after.pods > 0
            && after.p99_ns >= max * 1_000_000
        {
            problems.push(format!(
                "after: CNI ADD p99 {} is not below {max} ms: pod network setup is still slow",
                human(after.p99_ns)
            ));
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
        if let Some(change) = &self.change {
            let _ = writeln!(
                out,
                "\nPer-pod delay, after against before{}: {}",
                if self.gate.require_change { " (required)" } else { "" },
                change.sentence()
            );
        }
        if let (Some(before), Some(after)) = (&self.before_cni_add, &self.after_cni_add) {
            out.push_str("\n| | pods with a CNI ADD | ADD p50 | ADD p99 | gate |\n|---|---:|---:|---:|---|\n");
            let limit =
                |value: Option<u64>, text: &str| value.map_or_else(|| "-".to_string(), |ms| format!("{text} {ms} ms"));
            let _ = writeln!(
                out,
                "| before | {} | {} | {} | {} |",
                before.pods,
                human(before.p50_ns),
                human(before.p99_ns),
                limit(self.gate.before_min_cni_add_p50_ms, "p50 >")
            );
            let _ = writeln!(
                out,
                "| after | {} | {} | {} | {} |",
                after.pods,
                human(after.p50_ns),
                human(after.p99_ns),
                limit(self.gate.after_max_cni_add_p99_ms, "p99 <")
            );
        }
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

    impl BeforeAfter {
        /// The gate on sessions kept whole, as these tests change them.
        fn check_kept(self, before: &Session, after: &Session) -> GateResult {
            self.check(&before.clone().fold(), &after.clone().fold())
        }
    }

    fn fixture(name: &str) -> Session {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        Session::load(&path).expect("fixture")
    }

    #[test]
    fn recorded_before_and_after_pass() {
        let result = POD_START.check_kept(&fixture("default-20-pods.json"), &fixture("tuned-20-pods.json"));
        assert!(result.passed(), "{}", result.render());
        assert_eq!(result.before.addresses, 40);
        assert!(result.before.p50_ns > 500_000_000);
        assert!(result.render().contains("Gate passed."));
    }

    /// Required, the change must be real and for the better; shown either way.
    #[test]
    fn a_required_change_must_be_real_and_faster() {
        let required = BeforeAfter {
            require_change: true,
            ..POD_START
        };
        let (slow, fast) = (fixture("default-20-pods.json"), fixture("tuned-20-pods.json"));
        let result = required.check_kept(&slow, &fast);
        assert!(result.passed(), "{}", result.render());
        let change = result.change.expect("pods on both sides");
        assert!(
            change.significant
                && change.direction == Direction::Faster
                && (change.before_count, change.after_count) == (20, 20)
        );
        assert!(
            result.render().contains(
                "\nPer-pod delay, after against before (required): a real change: faster (Kolmogorov–Smirnov D 1.00, p "
            ),
            "{}",
            result.render()
        );
        assert!(
            POD_START
                .check_kept(&slow, &fast)
                .render()
                .contains("\nPer-pod delay, after against before: a real change: faster")
        );
        // Slower for real: refused, the thresholds failing too.
        let swapped = required.check_kept(&fast, &slow);
        assert!(
            swapped
                .problems
                .iter()
                .any(|p| p.starts_with("per-pod delay: a real change: slower")),
            "{:?}",
            swapped.problems
        );
        // Thresholds opened wide: only the test can fail. The same session twice is no change.
        let loose = BeforeAfter {
            before_min_p50_ms: 0,
            after_max_p99_ms: u64::MAX / 2_000_000,
            ..required
        };
        assert_eq!(loose.check_kept(&slow, &fast).problems, Vec::<String>::new());
        let same = loose.check_kept(&slow, &slow);
        assert_eq!(same.problems.len(), 1, "{:?}", same.problems);
        assert!(same.problems[0].starts_with("per-pod delay: no real change: the difference could be noise (Kolmogorov–Smirnov D 0.00, p 1.00, 20 vs 20 pods"), "{:?}", same.problems);
        assert!(
            POD_START
                .check_kept(&slow, &slow)
                .problems
                .iter()
                .all(|p| !p.starts_with("per-pod delay")),
            "not required: not a problem"
        );
        // No pods on a side: said.
        let mut empty = fast.clone();
        empty.events.clear();
        let result = loose.check_kept(&slow, &empty);
        assert!(result.change.is_none());
        assert!(
            result
                .problems
                .contains(&"per-pod delay: cannot tell whether it changed: after has no pods".to_string()),
            "{:?}",
            result.problems
        );
        assert!(
            loose
                .check_kept(&empty, &fast)
                .problems
                .contains(&"per-pod delay: cannot tell whether it changed: before has no pods".to_string())
        );
        assert!(!result.render().contains("Per-pod delay, after against before"));
    }

    #[test]
    fn swapped_sessions_fail_both_ways() {
        let result = POD_START.check_kept(&fixture("tuned-20-pods.json"), &fixture("default-20-pods.json"));
        assert_eq!(result.problems.len(), 2, "{:?}", result.problems);
        assert!(result.problems[0].starts_with("before: tentative p50"));
        assert!(result.problems[1].starts_with("after: tentative p99"));
        assert!(result.render().contains("Gate FAILED"));
    }

    /// `session` with only its first `count` pod addresses (and every host one).
    fn with_pod_addresses(mut session: Session, count: usize) -> Session {
        let mut kept = 0;
        session.events.retain(|event| {
            let keep = event.host_netns || kept < count;
            kept += usize::from(!event.host_netns);
            keep
        });
        session
    }

    #[test]
    fn too_few_addresses_fail_even_when_the_numbers_look_right() {
        let after = fixture("tuned-20-pods.json");
        let before = with_pod_addresses(fixture("default-20-pods.json"), 9);
        let result = POD_START.check_kept(&before, &after);
        assert_eq!(
            result.problems,
            ["before: 9 pod addresses traced, the gate needs at least 10"],
            "p50 of the 9 is still above 500 ms"
        );
        assert!(result.before.p50_ns > 500_000_000);
        // The minimum itself is enough.
        let before = with_pod_addresses(fixture("default-20-pods.json"), 10);
        assert!(POD_START.check_kept(&before, &after).passed());
    }

    /// The gate on CNI ADD: fixtures recorded before pods[] existed have no ADD, and fail it
    /// (it asked for ADDs); with ADDs it passes or fails on their times.
    #[test]
    fn the_cni_add_gate() {
        let (before, after) = (fixture("default-20-pods.json"), fixture("tuned-20-pods.json"));
        let result = POD_START_WITH_CNI.check_kept(&before, &after);
        assert_eq!(result.problems.len(), 2, "{:?}", result.problems);
        assert!(result.problems[0].contains("0 pods with a traced CNI ADD"));
        let with_pods = |session: &Session, add_ms: u64, pods: u32| {
            let mut session = session.clone();
            session.pods = (0..pods)
                .map(|inode| crate::report::podstart::tests::pod(inode, add_ms, add_ms.saturating_sub(20)))
                .collect();
            session
        };
        let with_adds = |session: &Session, add_ms: u64| with_pods(session, add_ms, 12);
        let passed = POD_START_WITH_CNI.check_kept(&with_adds(&before, 1800), &with_adds(&after, 40));
        assert!(passed.passed(), "{}", passed.render());
        assert!(
            passed
                .render()
                .contains("| before | 12 | 1.80 s | 1.80 s | p50 > 900 ms |"),
            "{}",
            passed.render()
        );
        let slow_after = POD_START_WITH_CNI.check_kept(&with_adds(&before, 1800), &with_adds(&after, 700));
        assert_eq!(slow_after.problems.len(), 1, "{:?}", slow_after.problems);
        assert!(
            slow_after.problems[0].starts_with("after: CNI ADD p99 700")
                && slow_after.problems[0].ends_with("not below 500 ms: pod network setup is still slow"),
            "{:?}",
            slow_after.problems
        );
        let fast_before = POD_START_WITH_CNI.check_kept(&with_adds(&before, 300), &with_adds(&after, 40));
        assert!(
            fast_before.problems[0].starts_with("before: CNI ADD p50 300"),
            "{:?}",
            fast_before.problems
        );
        assert!(
            POD_START.check_kept(&before, &after).before_cni_add.is_none(),
            "not gated by default"
        );
        // The minimum number of ADDs is enough; one limit alone gates the ADDs.
        let at_minimum = POD_START_WITH_CNI.check_kept(&with_pods(&before, 1800, 10), &with_pods(&after, 40, 10));
        assert!(at_minimum.passed(), "{}", at_minimum.render());
        let before_only = BeforeAfter {
            after_max_cni_add_p99_ms: None,
            ..POD_START_WITH_CNI
        };
        assert_eq!(
            before_only
                .check_kept(&with_adds(&before, 300), &with_adds(&after, 700))
                .problems
                .len(),
            1,
            "the before limit alone is checked"
        );
        let after_only = BeforeAfter {
            before_min_cni_add_p50_ms: None,
            ..POD_START_WITH_CNI
        };
        assert!(after_only.check_kept(&before, &after).before_cni_add.is_some());
        // No ADDs after: the count says so, no made-up p99 of 0 is judged.
        let nothing_allowed = BeforeAfter {
            after_max_cni_add_p99_ms: Some(0),
            ..POD_START_WITH_CNI
        };
        assert_eq!(
            nothing_allowed.check_kept(&with_adds(&before, 1800), &after).problems,
            ["after: 0 pods with a traced CNI ADD, the gate needs at least 10 (were CNI calls traced?)"]
        );
    }

    #[test]
    fn empty_or_lossy_sessions_fail() {
        let mut after = fixture("tuned-20-pods.json");
        after.lost_events = 3;
        let mut before = fixture("default-20-pods.json");
        before.events.clear();
        let problems = POD_START.check_kept(&before, &after).problems;
        // Nothing to take a p50 of: the count says so, no made-up p50 of 0 is judged.
        assert_eq!(
            problems,
            [
                "before: 0 pod addresses traced, the gate needs at least 10",
                "after: 3 events lost, figures incomplete"
            ]
        );
        let nothing_allowed = BeforeAfter {
            after_max_p99_ms: 0,
            ..POD_START
        };
        assert_eq!(
            nothing_allowed
                .check_kept(&fixture("default-20-pods.json"), &before)
                .problems,
            ["after: 0 pod addresses traced, the gate needs at least 10"]
        );
    }

    /// The limits are in milliseconds, the figures in nanoseconds: a limit just above the
    /// figure fails, just below passes.
    #[test]
    fn limits_sit_where_the_figures_are() {
        let (before, after) = (fixture("default-20-pods.json"), fixture("tuned-20-pods.json"));
        let result = POD_START.check_kept(&before, &after);
        let (p50_ms, p99_ms) = (result.before.p50_ns / 1_000_000, result.after.p99_ns / 1_000_000);
        let gate = |before_min_p50_ms, after_max_p99_ms| BeforeAfter {
            before_min_p50_ms,
            after_max_p99_ms,
            ..POD_START
        };
        assert!(gate(p50_ms, p99_ms + 1).check_kept(&before, &after).passed());
        let failed = gate(p50_ms + 1, p99_ms).check_kept(&before, &after).problems;
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed[0].starts_with("before: tentative p50") && failed[1].starts_with("after: tentative p99"));
    }
}
