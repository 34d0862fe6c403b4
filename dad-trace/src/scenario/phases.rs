//! The story in phases, the one place phase names are spelled: kernel defaults, the naive
//! tuning from the field, and tuning that reaches new namespaces.
use serde::Serialize;

use crate::node::doctor::Verdict;

/// What a phase must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// Pods wait for DAD: each pod's delay is at most its ADD time and within this many ms.
    TracksAddTime { within_ms: u64 },
    /// DAD is gone: every pod's delay is under this many ms.
    Fast { under_ms: u64 },
}

pub struct ScenarioPhase {
    pub name: &'static str,
    pub description: &'static str,
    /// `net.core.devconf_inherit_init_net` during the phase.
    pub inherit_init_net: &'static str,
    /// Host-namespace IPv6 settings during the phase.
    pub host_sysctls: &'static [(&'static str, &'static str)],
    pub gate: Expectation,
    /// What `dad-trace doctor` must conclude while the phase's pods are up.
    pub doctor: Verdict,
}

impl ScenarioPhase {
    /// Every sysctl the phase sets.
    pub fn sysctls(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        std::iter::once(("net.core.devconf_inherit_init_net", self.inherit_init_net))
            .chain(self.host_sysctls.iter().copied())
    }
}

/// The tuning from the field, set in the host namespace.
const NAIVE: [(&str, &str); 6] = [
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.dad_transmits", "0"),
    ("net.ipv6.conf.default.dad_transmits", "0"),
    ("net.ipv6.conf.all.optimistic_dad", "1"),
    ("net.ipv6.conf.default.optimistic_dad", "1"),
];

/// The story in three phases; `dad-trace scenario --list` shows them (the kind job reads it).
pub const PHASES: [ScenarioPhase; 3] = [
    ScenarioPhase {
        name: "defaults",
        description: "kernel defaults: every pod interface runs DAD",
        inherit_init_net: "0",
        host_sysctls: &[],
        gate: Expectation::TracksAddTime { within_ms: 150 },
        doctor: Verdict::DadOn,
    },
    ScenarioPhase {
        name: "naive-tuning",
        description: "accept_dad=0, dad_transmits=0, optimistic_dad=1 on all/default in the host namespace only",
        inherit_init_net: "0",
        host_sysctls: &NAIVE,
        gate: Expectation::TracksAddTime { within_ms: 150 },
        doctor: Verdict::NaiveTuningTrap,
    },
    ScenarioPhase {
        name: "inherit",
        description: "the same plus net.core.devconf_inherit_init_net=1: new namespaces inherit it",
        inherit_init_net: "1",
        host_sysctls: &NAIVE,
        gate: Expectation::Fast { under_ms: 50 },
        doctor: Verdict::Tuned,
    },
];

/// The phases the before/after gate compares (see [`crate::report::gate`]).
pub const BEFORE: &str = "defaults";
pub const AFTER: &str = "inherit";

/// What `dad-trace scenario --list` prints.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub phases: Vec<PhaseInfo>,
    /// The phases the before/after gate compares.
    pub before: &'static str,
    pub after: &'static str,
    /// The `dad-trace gate` flags that gate on CNI ADD time as the scenario does with a CNI
    /// plugin.
    pub cni_gate_flags: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PhaseInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub sysctls: Vec<(&'static str, &'static str)>,
}

#[must_use]
pub fn listing() -> Listing {
    Listing {
        phases: PHASES
            .iter()
            .map(|phase| PhaseInfo {
                name: phase.name,
                description: phase.description,
                sysctls: phase.sysctls().collect(),
            })
            .collect(),
        before: BEFORE,
        after: AFTER,
        cni_gate_flags: crate::report::gate::POD_START_WITH_CNI.cni_flags(),
    }
}

/// The phase of that name.
#[must_use]
pub fn by_name(name: &str) -> Option<&'static ScenarioPhase> {
    PHASES.iter().find(|phase| phase.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_tell_the_story() {
        let names: Vec<_> = PHASES.iter().map(|p| p.name).collect();
        assert_eq!(names, ["defaults", "naive-tuning", "inherit"]);
        let inherit = |phase: &ScenarioPhase| {
            phase
                .sysctls()
                .find(|(k, _)| *k == "net.core.devconf_inherit_init_net")
                .map(|(_, v)| v)
        };
        assert_eq!(PHASES.map(|p| inherit(&p)), [Some("0"), Some("0"), Some("1")]);
        assert!(
            PHASES[1]
                .sysctls()
                .any(|setting| setting == ("net.ipv6.conf.default.accept_dad", "0"))
        );
        assert_eq!(
            PHASES[0].sysctls().count(),
            1,
            "defaults touch only the inheritance switch"
        );
    }
}
