//! The pods' own DAD settings in a report: how many pods ran DAD by the settings read in
//! their namespace, and which ones the host's tuning did not reach (the host's `all` and
//! `default` say a new interface runs no DAD, the pod's say it does: new namespaces start
//! from compiled defaults unless `devconf_inherit_init_net` hands the host's on).
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    session::{
        PodSettings, PodStart,
        settings::{ConfValues, integer},
    },
    text::terminal,
};

/// How many pods the host's tuning did not reach are named.
pub const NAMED: usize = 5;

/// What the pods' settings say, over a session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SettingsSummary {
    /// Pods whose settings were read, or tried.
    pub pods: usize,
    pub dad_on: usize,
    pub dad_off: usize,
    /// Not read (gone, too slow), or a value needed was unreadable.
    pub unknown: usize,
    /// The host's `all` and `default` both say `accept_dad` below 1.
    pub host_dad_off: bool,
    /// Pods that ran DAD though the host is tuned not to, and the first [`NAMED`] of them.
    pub not_reached: usize,
    pub not_reached_named: Vec<String>,
}

/// Whether the host's settings (`sysctls_start`) say a new interface runs no DAD.
#[must_use]
pub fn host_dad_off(host: &BTreeMap<String, String>) -> bool {
    let accept = |scope: &str| {
        host.get(&format!("net.ipv6.conf.{scope}.accept_dad"))
            .and_then(|text| integer(text))
    };
    matches!((accept("all"), accept("default")), (Some(all), Some(default)) if all < 1 && default < 1)
}

/// Whether a pod's settings run DAD where the host's would not.
fn not_reached(settings: &PodSettings, host_dad_off: bool) -> bool {
    host_dad_off && settings.dad() == Some(true)
}

/// The summary of `pods`' settings; `None` when no pod has any (older sessions).
#[must_use]
pub fn summarize(pods: &[PodStart], host: &BTreeMap<String, String>) -> Option<SettingsSummary> {
    let host_dad_off = host_dad_off(host);
    let mut summary = SettingsSummary {
        host_dad_off,
        ..SettingsSummary::default()
    };
    for pod in pods {
        let Some(settings) = &pod.settings else {
            continue;
        };
        summary.pods += 1;
        match settings.dad() {
            Some(true) => summary.dad_on += 1,
            Some(false) => summary.dad_off += 1,
            None => summary.unknown += 1,
        }
        if not_reached(settings, host_dad_off) {
            summary.not_reached += 1;
            if summary.not_reached_named.len() < NAMED {
                summary.not_reached_named.push(pod.label());
            }
        }
    }
    (summary.pods > 0).then_some(summary)
}

fn value(value: Option<i64>) -> String {
    value.map_or_else(|| "?".into(), |value| value.to_string())
}

fn yes_no(verdict: Option<bool>, yes: &str, no: &str) -> String {
    match verdict {
        Some(true) => yes.into(),
        Some(false) => no.into(),
        None => "unknown".into(),
    }
}

fn values(values: &ConfValues) -> String {
    format!(
        "accept_dad={} dad_transmits={} optimistic_dad={}",
        value(values.accept_dad),
        value(values.dad_transmits),
        value(values.optimistic_dad)
    )
}

/// One pod's settings on one line: `all.accept_dad` (it counts on every interface), then
/// each interface's own values and verdict, or with none read what a new one would copy.
#[must_use]
pub fn line(settings: &PodSettings, host_dad_off: bool) -> String {
    if let Some(why) = &settings.unread {
        return format!("settings: not read ({})", terminal(why));
    }
    let mut out = format!("settings: all.accept_dad={}", value(settings.all.accept_dad));
    if settings.interfaces.is_empty() {
        let _ = write!(
            out,
            "; default {} (DAD {} for a new interface)",
            values(&settings.default),
            yes_no(settings.dad(), "on", "off")
        );
    }
    for interface in &settings.interfaces {
        let _ = write!(
            out,
            "; {} {} (DAD {}, optimistic {})",
            terminal(&interface.name),
            values(&interface.values),
            yes_no(interface.dad, "on", "off"),
            yes_no(interface.optimistic, "on", "off")
        );
    }
    if settings.interfaces_truncated {
        out.push_str("; more interfaces not read");
    }
    if not_reached(settings, host_dad_off) {
        out.push_str(" — host tuning did not reach this namespace");
    }
    out
}

/// The terminal lines: the counts, then the pods the host's tuning did not reach.
#[must_use]
pub fn render_text(summary: &SettingsSummary) -> String {
    let mut out = format!(
        "  Pods' own DAD settings, read at their first address: DAD on in {}, off in {}, unknown in {}\n",
        summary.dad_on, summary.dad_off, summary.unknown
    );
    if summary.not_reached > 0 {
        let named: Vec<String> = summary
            .not_reached_named
            .iter()
            .map(|label| terminal(label).into_owned())
            .collect();
        let more = summary.not_reached - named.len();
        let _ = writeln!(
            out,
            "  Host tuning did not reach {} pods (the host's all/default accept_dad say no DAD; \
             see devconf_inherit_init_net): {}{}",
            summary.not_reached,
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::podstart::tests::pod;

    fn accept(accept_dad: i64) -> ConfValues {
        ConfValues {
            accept_dad: Some(accept_dad),
            dad_transmits: Some(1),
            optimistic_dad: Some(0),
            ..ConfValues::default()
        }
    }

    fn read(all: i64, eth0: i64) -> PodSettings {
        PodSettings {
            all: accept(all),
            default: accept(eth0),
            all_forwarding: Some(0),
            ..PodSettings::default()
        }
        .with_interfaces(vec![("eth0".into(), accept(eth0))])
    }

    fn host(all: &str, default: &str) -> BTreeMap<String, String> {
        [
            ("net.ipv6.conf.all.accept_dad", all),
            ("net.ipv6.conf.default.accept_dad", default),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
    }

    #[test]
    fn the_host_is_tuned_off_when_all_and_default_say_so() {
        assert!(host_dad_off(&host("0", "0")));
        assert!(host_dad_off(&host("-1", " 0\n")));
        assert!(!host_dad_off(&host("1", "0")));
        assert!(!host_dad_off(&host("0", "1")));
        assert!(!host_dad_off(&host("0", "off")), "unreadable is not off");
        assert!(!host_dad_off(&BTreeMap::new()));
    }

    #[test]
    fn pods_are_counted_and_those_the_tuning_missed_named() {
        let mut pods: Vec<PodStart> = (1..=9).map(|inode| pod(inode, 100, 50)).collect();
        for (index, pod) in pods.iter_mut().enumerate().take(8) {
            pod.settings = Some(match index {
                6 => read(0, 0),
                7 => PodSettings::unread("gone"),
                _ => read(0, 1),
            });
        }
        let summary = summarize(&pods, &host("0", "0")).expect("settings");
        assert_eq!(
            (summary.pods, summary.dad_on, summary.dad_off, summary.unknown),
            (8, 6, 1, 1)
        );
        assert_eq!(summary.not_reached, 6);
        assert_eq!(summary.not_reached_named.len(), NAMED);
        assert_eq!(summary.not_reached_named[0], "team-a/web-1");
        let text = render_text(&summary);
        assert!(text.contains("DAD on in 6, off in 1, unknown in 1"), "{text}");
        assert!(
            text.contains("did not reach 6 pods") && text.contains("team-a/web-5 and 1 more\n"),
            "{text}"
        );
        let all_named = SettingsSummary {
            not_reached: 5,
            ..summary.clone()
        };
        assert!(render_text(&all_named).contains("team-a/web-5\n"));
        let tuned_host_untouched = summarize(&pods, &host("1", "1")).expect("settings");
        assert_eq!(tuned_host_untouched.not_reached, 0);
        assert!(!render_text(&tuned_host_untouched).contains("did not reach"));
        assert_eq!(summarize(&pods[8..], &host("0", "0")), None, "no pod has settings");
    }

    #[test]
    fn a_pod_line_shows_values_and_verdicts() {
        assert_eq!(
            line(&read(0, 1), true),
            "settings: all.accept_dad=0; eth0 accept_dad=1 dad_transmits=1 optimistic_dad=0 \
             (DAD on, optimistic off) — host tuning did not reach this namespace"
        );
        assert_eq!(
            line(&read(0, 0), true),
            "settings: all.accept_dad=0; eth0 accept_dad=0 dad_transmits=1 optimistic_dad=0 (DAD off, optimistic off)"
        );
        let fresh = PodSettings {
            default: accept(1),
            ..PodSettings::default()
        };
        assert_eq!(
            line(&fresh, false),
            "settings: all.accept_dad=?; default accept_dad=1 dad_transmits=1 optimistic_dad=0 (DAD on for a new interface)"
        );
        let mut many = read(1, 1);
        many.interfaces_truncated = true;
        many.interfaces[0].optimistic = None;
        assert!(line(&many, false).ends_with("(DAD on, optimistic unknown); more interfaces not read"));
        let mut hostile = read(1, 1);
        hostile.interfaces[0].name = "e\u{1b}[2J".into();
        assert!(!line(&hostile, false).contains('\u{1b}'));
        assert_eq!(
            line(&PodSettings::unread("gone\u{7}"), true),
            "settings: not read (gone\\x07)"
        );
    }
}
