//! What each phase must show, judged per pod against the ADD time the scenario measured.
use super::{
    PhaseResult, PodRun,
    phases::{AFTER, BEFORE, Gate},
};
use crate::{hist::human, report::gate};

/// What an ADD typically costs without DAD: the median ADD of a phase where DAD is gone
/// (the plugin's own work; a TCG guest spends hundreds of ms there). The median, not the
/// slowest: one slow ADD must not widen every pod's allowance.
#[must_use]
pub fn add_baseline_ns(results: &[PhaseResult]) -> u64 {
    results
        .iter()
        .filter(|result| matches!(result.gate, Gate::Fast { .. }))
        .filter_map(|result| result.add.map(|add| add.p50_ns))
        .min()
        .unwrap_or(0)
}

/// Judges every phase: while DAD runs, each pod's ADD may exceed its traced wait by the
/// phase's tolerance plus the median DAD-free ADD (plus `extra_slack_ms`, for emulated
/// machines only).
pub fn apply_gates(results: &mut [PhaseResult], extra_slack_ms: u64) {
    let baseline = add_baseline_ns(results) + extra_slack_ms * 1_000_000;
    for result in results.iter_mut() {
        result.problems = check(result.gate, &result.pods, baseline);
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

fn check(gate: Gate, pods: &[PodRun], baseline_ns: u64) -> Vec<String> {
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
                if traced >= under_ms * 1_000_000 {
                    problems.push(format!(
                        "{}: traced {} (must be under {under_ms} ms)",
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
            |gate, add_ms, traced_ms, baseline_ns| check(gate, &[run("a", add_ms, traced_ms)], baseline_ns).len();
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
    }
}
