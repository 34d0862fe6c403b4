//! What each phase must show, judged per pod against the ADD time the scenario measured.
use super::{
    PhaseResult, PodRun,
    phases::{AFTER, BEFORE, Gate},
};
use crate::{hist::human, report::gate};

/// What an ADD costs without DAD: the slowest ADD of a phase where DAD is gone. A slow
/// machine (a TCG guest) spends hundreds of ms in the plugin itself; that is not DAD.
#[must_use]
pub fn add_baseline_ns(results: &[PhaseResult]) -> u64 {
    results
        .iter()
        .filter(|result| matches!(result.gate, Gate::Fast { .. }))
        .filter_map(|result| result.add.map(|add| add.max_ns))
        .min()
        .unwrap_or(0)
}

/// Timing slack for slow machines (emulated VMs); zero on real hardware.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slack {
    /// Added to every `TracksAddTime` tolerance: ADD-time jitter.
    pub add_ms: u64,
    /// Added to every `Fast` bound: with DAD off a pod's span (first tentative address → last
    /// settled) still covers the plugin's own steps from link-up to adding the address, and
    /// a kworker's turn to settle it, which emulation stretches to tens of ms.
    pub fast_ms: u64,
}

/// Judges every phase, allowing the DAD-free ADD cost (and any slack) on top of the
/// tolerance.
pub fn apply_gates(results: &mut [PhaseResult], slack: Slack) {
    let baseline = add_baseline_ns(results) + slack.add_ms * 1_000_000;
    for result in results.iter_mut() {
        result.problems = check(result.gate, &result.pods, baseline, slack.fast_ms);
        if result.doctor != result.expected_doctor {
            result.problems.push(format!(
                "doctor said {:?}, expected {:?}",
                result.doctor, result.expected_doctor
            ));
        }
    }
    let position = |name: &str| results.iter().position(|result| result.phase == name);
    if let (Some(before), Some(after)) = (position(BEFORE), position(AFTER)) {
        let verdict = gate::POD_START.check(&results[before].session, &results[after].session);
        let problems = verdict
            .problems
            .iter()
            .map(|problem| format!("before/after gate: {problem}"));
        results[after].problems.extend(problems);
        results[after].before_after = Some(verdict);
    }
}

fn check(gate: Gate, pods: &[PodRun], baseline_ns: u64, fast_slack_ms: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for pod in pods {
        let Some(traced) = pod.traced_ns else {
            problems.push(format!("{}: dad-trace saw no address", pod.name));
            continue;
        };
        match gate {
            Gate::TracksAddTime { within_ms } => {
                if traced > pod.add_ns || pod.add_ns - traced > within_ms * 1_000_000 + baseline_ns {
                    problems.push(format!(
                        "{}: traced {} vs ADD {} (must be ≤ ADD and within {within_ms} ms + the {} ADD costs without DAD)",
                        pod.name,
                        human(traced),
                        human(pod.add_ns),
                        human(baseline_ns)
                    ));
                }
            }
            Gate::Fast { under_ms } => {
                let bound_ms = under_ms + fast_slack_ms;
                if traced >= bound_ms * 1_000_000 {
                    problems.push(format!(
                        "{}: traced {} (must be under {bound_ms} ms)",
                        pod.name,
                        human(traced)
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, add_ms: u64, traced_ms: Option<u64>) -> PodRun {
        PodRun {
            name: name.into(),
            add_ns: add_ms * 1_000_000,
            traced_ns: traced_ms.map(|ms| ms * 1_000_000),
        }
    }

    #[test]
    fn gates_judge_pods() {
        let tracks = Gate::TracksAddTime { within_ms: 150 };
        let problems =
            |gate, add_ms, traced_ms, baseline_ns| check(gate, &[run("a", add_ms, traced_ms)], baseline_ns, 0).len();
        assert_eq!(problems(tracks, 2000, Some(1900), 0), 0);
        assert_eq!(problems(tracks, 2000, Some(1700), 0), 1, "too far below ADD");
        assert_eq!(
            problems(tracks, 2000, Some(1700), 340_000_000),
            0,
            "a slow plugin is not DAD"
        );
        assert_eq!(problems(tracks, 2000, Some(2100), 0), 1, "above ADD");
        assert_eq!(problems(tracks, 2000, None, 0), 1, "unseen");
        let fast = Gate::Fast { under_ms: 50 };
        assert_eq!(problems(fast, 10, Some(1), 0), 0);
        assert_eq!(problems(fast, 10, Some(60), 0), 1);
        let slow = |traced_ms| check(fast, &[run("a", 10, Some(traced_ms))], 0, 100).len();
        assert_eq!((slow(120), slow(150)), (0, 1), "emulation slack, still far below DAD");
    }
}
