//! What each phase must show, judged per pod against the ADD time the scenario measured.
use super::{
    PhaseResult, PodRun,
    phases::{AFTER, BEFORE, Expectation},
    plugin::Plugin,
};
use crate::{
    hist::{Delays, human},
    report::gate,
};

/// The CNI ADD dad-trace traces from the kernel (the plugin forked → its last thread exited)
/// against the scenario's own wall time of the call (spawn → reaped): they differ by the
/// spawn-to-fork and exit-to-reap edges, under a millisecond on a quiet machine. The median
/// over a phase's pods must be within this.
pub const ADD_AGREEMENT_MS: u64 = 5;

/// Any one pod: the reaping side waits for the scheduler and, in the tests, for the recorder
/// working in the same process (a debug build): a busy machine delays one pod by tens of ms
/// while the median stays under a millisecond. A call taken from the wrong process (a
/// delegate's start or end) would be off by a plugin's run, hundreds of ms with DAD: the
/// bound sits between the two.
pub const ADD_AGREEMENT_WORST_MS: u64 = 100;

/// The kernel's ADD lies inside the scenario's: longer by more than this is a wrong end.
const ADD_CLOCK_SLACK_NS: u64 = 1_000_000;

/// What an ADD typically costs without DAD: the median ADD of a phase where DAD is gone
/// (the plugin's own work; a TCG guest spends hundreds of ms there). The median, not the
/// slowest: one slow ADD must not widen every pod's allowance.
#[must_use]
pub fn add_baseline_ns(results: &[PhaseResult]) -> u64 {
    results
        .iter()
        .filter(|result| matches!(result.gate, Expectation::Fast { .. }))
        .filter_map(|result| result.add.map(|add| add.p50_ns))
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
    /// Added to both bounds of traced against measured ADD: emulated fork, exec and reaping
    /// run several times slower than on hardware.
    pub agreement_ms: u64,
}

/// Judges every phase, allowing the DAD-free ADD cost (and any slack) on top of the
/// tolerance.
pub fn apply_gates(results: &mut [PhaseResult], slack: Slack) {
    let baseline = add_baseline_ns(results) + slack.add_ms * 1_000_000;
    for result in results.iter_mut() {
        result.problems = check(result.gate, &result.pods, baseline, slack.fast_ms);
        if result.plugin != Plugin::Veth {
            result
                .problems
                .extend(check_add_agreement(&result.pods, slack.agreement_ms * 1_000_000));
        }
        if result.doctor != result.expected_doctor {
            result.problems.push(format!(
                "doctor said {:?}, expected {:?}",
                result.doctor, result.expected_doctor
            ));
        }
    }
    let position = |name: &str| results.iter().position(|result| result.phase == name);
    if let (Some(before), Some(after)) = (position(BEFORE), position(AFTER)) {
        let verdict = before_after_gate(results[after].plugin, slack).check(
            &results[before].session.clone().fold(),
            &results[after].session.clone().fold(),
        );
        let problems = verdict
            .problems
            .iter()
            .map(|problem| format!("before/after gate: {problem}"));
        results[after].problems.extend(problems);
        results[after].before_after = Some(verdict);
    }
}

/// The kind job's before/after gate. Where a CNI plugin set the pods up it looks at the ADD
/// times too; a slow machine's ADD slack is allowed on top of the after side's limit, as on
/// every other ADD bound (an emulated guest's DAD-free ADD alone can take 400 ms).
fn before_after_gate(plugin: Plugin, slack: Slack) -> gate::BeforeAfter {
    if plugin == Plugin::Veth {
        return gate::POD_START;
    }
    let mut with_cni = gate::POD_START_WITH_CNI;
    with_cni.after_max_cni_add_p99_ms = with_cni.after_max_cni_add_p99_ms.map(|limit| limit + slack.add_ms);
    with_cni
}

/// Every pod's ADD traced, never longer than the scenario's own time of it, within
/// [`ADD_AGREEMENT_WORST_MS`] of it, and within [`ADD_AGREEMENT_MS`] at the median of the
/// phase (both plus `slack_ns`, emulated machines).
fn check_add_agreement(pods: &[PodRun], slack_ns: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let mut differences = Vec::new();
    for pod in pods {
        match (pod.cni_add_ns, pod.traced_cni_add_ns) {
            (Some(measured), Some(traced)) => {
                differences.push(measured.saturating_sub(traced));
                let too_long = traced > measured + ADD_CLOCK_SLACK_NS;
                if too_long || measured - traced > ADD_AGREEMENT_WORST_MS * 1_000_000 + slack_ns {
                    problems.push(format!(
                        "{}: traced CNI ADD {} vs measured {} (must be inside it, by at most {ADD_AGREEMENT_WORST_MS} ms)",
                        pod.name,
                        human(traced),
                        human(measured)
                    ));
                }
            }
            (Some(_), None) => problems.push(format!("{}: dad-trace traced no CNI ADD", pod.name)),
            _ => {}
        }
    }
    if let Some(median) = Delays::from_values(differences).summary().map(|summary| summary.p50_ns)
        && median > ADD_AGREEMENT_MS * 1_000_000 + slack_ns
    {
        problems.push(format!(
            "traced and measured CNI ADD differ by {} at the median (must be within {ADD_AGREEMENT_MS} ms)",
            human(median)
        ));
    }
    problems
}

fn check(gate: Expectation, pods: &[PodRun], baseline_ns: u64, fast_slack_ms: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for pod in pods {
        // dad-trace counts every failed bind of the pod's application, exactly.
        if let Some(failures) = pod.app_failures
            && failures != pod.traced_app_failures
        {
            problems.push(format!(
                "{}: its application failed {failures} binds, dad-trace counted {}",
                pod.name, pod.traced_app_failures
            ));
        }
        let Some(traced) = pod.traced_ns else {
            problems.push(format!("{}: dad-trace saw no address", pod.name));
            continue;
        };
        match gate {
            Expectation::TracksAddTime { within_ms } => {
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
            Expectation::Fast { under_ms } => {
                // Without DAD an address is still tentative until its DAD work item runs
                // (a few ms in an emulated guest): one bind may land there, a retry not.
                if pod.app_failures.is_some_and(|failures| failures > 1) {
                    problems.push(format!(
                        "{}: its application failed {} binds with DAD gone (one retry outlasts the DAD work item)",
                        pod.name,
                        pod.app_failures.unwrap_or_default()
                    ));
                }
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
            cni_add_ns: None,
            traced_cni_add_ns: None,
            app_failures: None,
            traced_app_failures: 0,
        }
    }

    #[test]
    fn traced_adds_must_agree_with_the_measured_ones() {
        let pod = |measured_us: u64, traced_us: Option<u64>| PodRun {
            cni_add_ns: Some(measured_us * 1000),
            traced_cni_add_ns: traced_us.map(|us| us * 1000),
            ..run("a", 2000, Some(1900))
        };
        assert!(check_add_agreement(&[pod(1_950_000, Some(1_948_700))], 0).is_empty());
        assert_eq!(
            check_add_agreement(&[pod(1_950_000, Some(1_944_900))], 0).len(),
            1,
            "5.1 ms apart at the median"
        );
        assert!(
            check_add_agreement(&[pod(1_950_000, Some(1_944_900))], 10_000_000).is_empty(),
            "an emulated machine's 10 ms"
        );
        // One pod reaped 8.5 ms late among pods within a millisecond: fine; 100.1 ms: not.
        let late = |late_us: u64| {
            [
                pod(200_000, Some(199_500)),
                pod(200_000, Some(200_000 - late_us)),
                pod(201_000, Some(200_800)),
            ]
        };
        assert!(check_add_agreement(&late(8_500), 0).is_empty());
        assert_eq!(check_add_agreement(&late(100_100), 0).len(), 1);
        assert!(
            check_add_agreement(&late(100_100), 1_000_000).is_empty(),
            "an emulated machine's slack"
        );
        assert_eq!(
            check_add_agreement(&[pod(40_000, Some(41_200))], 0).len(),
            1,
            "the kernel's ADD 1.2 ms longer than the runtime's: a wrong end"
        );
        assert_eq!(
            check_add_agreement(&[pod(40_000, None)], 0),
            ["a: dad-trace traced no CNI ADD"]
        );
        assert!(
            check_add_agreement(&[run("veth", 10, Some(1))], 0).is_empty(),
            "no CNI plugin"
        );
    }

    #[test]
    fn the_before_after_gate_allows_a_slow_machine_its_add_slack() {
        let emulated = Slack {
            add_ms: 350,
            ..Slack::default()
        };
        assert_eq!(
            before_after_gate(Plugin::Ptp, Slack::default()),
            gate::POD_START_WITH_CNI
        );
        assert_eq!(
            before_after_gate(Plugin::Ptp, emulated).after_max_cni_add_p99_ms,
            Some(850)
        );
        assert_eq!(before_after_gate(Plugin::Veth, emulated), gate::POD_START);
    }

    #[test]
    fn gates_judge_pods() {
        let tracks = Expectation::TracksAddTime { within_ms: 150 };
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
        let fast = Expectation::Fast { under_ms: 50 };
        assert_eq!(problems(fast, 10, Some(1), 0), 0);
        assert_eq!(problems(fast, 10, Some(60), 0), 1);
        let slow = |traced_ms| check(fast, &[run("a", 10, Some(traced_ms))], 0, 100).len();
        assert_eq!((slow(120), slow(150)), (0, 1), "emulation slack, still far below DAD");
    }

    /// A pod application's failed binds: counted by dad-trace exactly, and none once DAD is
    /// gone.
    #[test]
    fn gates_judge_pod_applications() {
        let app = |gate, failures, traced| {
            let pod = PodRun {
                app_failures: Some(failures),
                traced_app_failures: traced,
                ..run("a", 2000, Some(1900))
            };
            check(gate, &[pod], 0, 0)
        };
        let tracks = Expectation::TracksAddTime { within_ms: 150 };
        assert!(app(tracks, 30, 30).is_empty());
        assert_eq!(
            app(tracks, 30, 29),
            ["a: its application failed 30 binds, dad-trace counted 29"]
        );
        assert_eq!(app(tracks, 0, 1).len(), 1, "counted what did not fail");
        let fast = Expectation::Fast { under_ms: 50 };
        let pod = |failures, traced| PodRun {
            app_failures: Some(failures),
            traced_app_failures: traced,
            ..run("b", 10, Some(1))
        };
        assert!(check(fast, &[pod(0, 0)], 0, 0).is_empty());
        assert!(check(fast, &[pod(1, 1)], 0, 0).is_empty(), "the DAD work item's window");
        assert_eq!(
            check(fast, &[pod(2, 2)], 0, 0),
            ["b: its application failed 2 binds with DAD gone (one retry outlasts the DAD work item)"]
        );
        assert!(
            check(
                fast,
                &[PodRun {
                    app_failures: None,
                    ..pod(0, 0)
                }],
                0,
                0
            )
            .is_empty()
        );
    }
}
