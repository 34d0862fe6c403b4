//! A pod namespace's own DAD settings, read when its first address appeared: its `all`,
//! `default` and per-interface values, and what the kernel makes of them for each interface.
//! A new namespace starts from compiled defaults unless `devconf_inherit_init_net` says
//! otherwise, so the host's tuning (`sysctls_start`) may not be what its pods run with.
//!
//! Which value counts, as `net/ipv6/addrconf.c` reads them (since 4.14): DAD runs when the
//! larger of `all.accept_dad` and the interface's is at least 1; a kernel-made link-local
//! address is optimistic when `all.optimistic_dad` or the interface's is set and
//! `all.forwarding` is 0 (the same reading as `node::doctor::model`); `dad_transmits` is the
//! interface's own.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use serde::{Deserialize, Serialize};

/// At most this many interfaces are kept per namespace (a pod has one or two; a namespace
/// with hundreds must not grow the session).
pub const MAX_INTERFACES: usize = 16;
/// The longest interface name the kernel allows (`IFNAMSIZ` - 1).
pub const MAX_IFNAME: usize = 15;

/// One directory of `net/ipv6/conf`: each value as read, absent when the file was missing or
/// did not hold an integer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfValues {
    pub accept_dad: Option<i64>,
    pub dad_transmits: Option<i64>,
    pub optimistic_dad: Option<i64>,
    pub use_optimistic: Option<i64>,
    pub enhanced_dad: Option<i64>,
}

impl ConfValues {
    /// The file names read in each directory.
    pub const NAMES: [&str; 5] = [
        "accept_dad",
        "dad_transmits",
        "optimistic_dad",
        "use_optimistic",
        "enhanced_dad",
    ];

    /// The values `read` returns for each of [`Self::NAMES`] (the file's text, `None` when it
    /// could not be read).
    pub fn read(mut read: impl FnMut(&str) -> Option<String>) -> Self {
        let mut value = |name: &str| read(name).as_deref().and_then(integer);
        Self {
            accept_dad: value("accept_dad"),
            dad_transmits: value("dad_transmits"),
            optimistic_dad: value("optimistic_dad"),
            use_optimistic: value("use_optimistic"),
            enhanced_dad: value("enhanced_dad"),
        }
    }
}

/// A sysctl file's text as an integer: one, with optional surrounding whitespace.
#[must_use]
pub fn integer(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// One interface of the namespace, and the kernel's verdict for a new address on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSettings {
    pub name: String,
    pub values: ConfValues,
    /// Whether DAD runs; null when a value it needs is unknown.
    pub dad: Option<bool>,
    /// Whether its kernel-made link-local address is optimistic (usable while DAD runs).
    pub optimistic: Option<bool>,
}

/// A pod namespace's settings, or why they could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodSettings {
    /// Why nothing was read (the namespace was gone, the read took too long); null when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread: Option<String>,
    pub all: ConfValues,
    pub default: ConfValues,
    /// `all.forwarding`: no address is optimistic where it is on.
    pub all_forwarding: Option<i64>,
    /// The namespace's interfaces but loopback (which never runs DAD), by name, at most
    /// [`MAX_INTERFACES`].
    pub interfaces: Vec<InterfaceSettings>,
    /// More interfaces than [`MAX_INTERFACES`] were there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interfaces_truncated: bool,
}

/// `max(all, interface) >= 1`, when that is known from what was read.
fn accepts_dad(all: Option<i64>, own: Option<i64>) -> Option<bool> {
    match (all, own) {
        (Some(all), Some(own)) => Some(all.max(own) >= 1),
        (Some(value), None) | (None, Some(value)) => (value >= 1).then_some(true),
        (None, None) => None,
    }
}

fn set(value: Option<i64>) -> Option<bool> {
    value.map(|value| value >= 1)
}

impl PodSettings {
    /// Settings that could not be read, and why.
    #[must_use]
    pub fn unread(why: impl Into<String>) -> Self {
        Self {
            unread: Some(why.into()),
            ..Self::default()
        }
    }

    /// The settings of `interfaces` (name and values, in any order) under these `all` values:
    /// sorted by name, loopback left out, at most [`MAX_INTERFACES`] kept.
    #[must_use]
    pub fn with_interfaces(mut self, interfaces: Vec<(String, ConfValues)>) -> Self {
        let mut interfaces: Vec<(String, ConfValues)> = interfaces
            .into_iter()
            .filter(|(name, _)| name != "lo" && !name.is_empty() && name.len() <= MAX_IFNAME)
            .collect();
        interfaces.sort_by(|a, b| a.0.cmp(&b.0));
        self.interfaces_truncated = interfaces.len() > MAX_INTERFACES;
        interfaces.truncate(MAX_INTERFACES);
        self.interfaces = interfaces
            .into_iter()
            .map(|(name, values)| {
                let dad = accepts_dad(self.all.accept_dad, values.accept_dad);
                InterfaceSettings {
                    optimistic: self.optimistic(dad, values.optimistic_dad),
                    name,
                    values,
                    dad,
                }
            })
            .collect();
        self
    }

    /// Whether a kernel-made link-local address is optimistic where DAD is `dad` and the
    /// interface's `optimistic_dad` is `own`.
    fn optimistic(&self, dad: Option<bool>, own: Option<i64>) -> Option<bool> {
        if dad == Some(false) {
            return Some(false);
        }
        let forwarding = set(self.all_forwarding)?;
        let flag = match (set(self.all.optimistic_dad), set(own)) {
            (Some(true), _) | (_, Some(true)) => true,
            (Some(false), Some(false)) => false,
            _ => return None,
        };
        Some(flag && !forwarding)
    }

    /// Whether the pod runs DAD: on any interface read, or with none read, on a new interface
    /// (which copies `default`); null when unread or unknown.
    #[must_use]
    pub fn dad(&self) -> Option<bool> {
        if self.unread.is_some() {
            return None;
        }
        if self.interfaces.is_empty() {
            return accepts_dad(self.all.accept_dad, self.default.accept_dad);
        }
        let verdicts: Vec<Option<bool>> = self.interfaces.iter().map(|interface| interface.dad).collect();
        if verdicts.contains(&Some(true)) {
            Some(true)
        } else if verdicts.iter().all(|dad| *dad == Some(false)) {
            Some(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(accept_dad: i64, optimistic_dad: i64) -> ConfValues {
        ConfValues {
            accept_dad: Some(accept_dad),
            dad_transmits: Some(1),
            optimistic_dad: Some(optimistic_dad),
            use_optimistic: Some(0),
            enhanced_dad: Some(1),
        }
    }

    fn settings(all: ConfValues, forwarding: i64, interfaces: &[(&str, ConfValues)]) -> PodSettings {
        PodSettings {
            all,
            all_forwarding: Some(forwarding),
            ..PodSettings::default()
        }
        .with_interfaces(
            interfaces
                .iter()
                .map(|(name, values)| ((*name).to_string(), *values))
                .collect(),
        )
    }

    #[test]
    fn values_are_integers_or_absent() {
        let files = |name: &str| match name {
            "accept_dad" => Some(" 2\n".to_string()),
            "dad_transmits" => Some("-1\n".to_string()),
            "optimistic_dad" => Some("1 2\n".to_string()),
            "use_optimistic" => Some("yes".to_string()),
            _ => None,
        };
        let read = ConfValues::read(files);
        assert_eq!(
            read,
            ConfValues {
                accept_dad: Some(2),
                dad_transmits: Some(-1),
                optimistic_dad: None,
                use_optimistic: None,
                enhanced_dad: None,
            }
        );
        assert_eq!(integer("99999999999999999999"), None, "too large for i64");
        assert_eq!(integer(""), None);
    }

    /// `accept_dad` is the larger of `all` and the interface's.
    #[test]
    fn dad_runs_when_all_or_the_interface_accepts_it() {
        let verdict = |all: i64, own: i64| settings(values(all, 0), 0, &[("eth0", values(own, 0))]).dad();
        assert_eq!(verdict(0, 1), Some(true));
        assert_eq!(verdict(1, 0), Some(true));
        assert_eq!(verdict(2, -1), Some(true));
        assert_eq!(verdict(0, 0), Some(false));
        assert_eq!(verdict(-1, 0), Some(false));
        // One of the two unknown: only a known 1 decides.
        assert_eq!(accepts_dad(None, Some(1)), Some(true));
        assert_eq!(accepts_dad(Some(1), None), Some(true));
        assert_eq!(accepts_dad(Some(0), None), None);
        assert_eq!(accepts_dad(None, Some(0)), None);
        assert_eq!(accepts_dad(None, None), None);
    }

    #[test]
    fn optimistic_needs_dad_a_flag_and_no_forwarding() {
        let eth0 = |all: ConfValues, forwarding: i64, own: ConfValues| {
            let read = settings(all, forwarding, &[("eth0", own)]);
            (read.interfaces[0].dad, read.interfaces[0].optimistic)
        };
        assert_eq!(eth0(values(0, 1), 0, values(1, 0)), (Some(true), Some(true)), "all's");
        assert_eq!(eth0(values(0, 0), 0, values(1, 1)), (Some(true), Some(true)), "own");
        assert_eq!(eth0(values(0, 0), 0, values(1, 0)), (Some(true), Some(false)));
        assert_eq!(
            eth0(values(0, 1), 1, values(1, 1)),
            (Some(true), Some(false)),
            "forwarding"
        );
        assert_eq!(
            eth0(values(0, 1), 0, values(0, 1)),
            (Some(false), Some(false)),
            "no DAD"
        );
        let unknown = ConfValues {
            optimistic_dad: None,
            ..values(1, 0)
        };
        assert_eq!(eth0(values(0, 0), 0, unknown).1, None);
        assert_eq!(eth0(values(0, 0), 0, unknown).0, Some(true));
        assert_eq!(eth0(values(0, 1), 0, unknown).1, Some(true), "all's flag is enough");
        let no_forwarding = PodSettings {
            all_forwarding: None,
            ..settings(values(0, 1), 0, &[("eth0", values(1, 1))])
        };
        assert_eq!(no_forwarding.optimistic(Some(true), Some(1)), None);
    }

    #[test]
    fn interfaces_are_sorted_bounded_and_loopback_is_left_out() {
        let many: Vec<(String, ConfValues)> = (0..20)
            .map(|i| (format!("net{i:02}"), values(1, 0)))
            .chain([
                ("lo".to_string(), values(1, 0)),
                ("x".repeat(16), values(1, 0)),
                (String::new(), values(1, 0)),
            ])
            .rev()
            .collect();
        let read = PodSettings::default().with_interfaces(many);
        assert_eq!(read.interfaces.len(), MAX_INTERFACES);
        assert!(read.interfaces_truncated);
        assert_eq!(read.interfaces[0].name, "net00");
        assert!(read.interfaces.iter().all(|i| i.name.starts_with("net")));
        let exactly =
            PodSettings::default().with_interfaces((0..16).map(|i| (format!("net{i:02}"), values(1, 0))).collect());
        assert!(!exactly.interfaces_truncated);
        assert_eq!(exactly.interfaces.len(), 16);
        let longest = PodSettings::default().with_interfaces(vec![("x".repeat(15), values(1, 0))]);
        assert_eq!(longest.interfaces.len(), 1);
    }

    #[test]
    fn the_pod_runs_dad_when_any_interface_does() {
        let on = settings(values(0, 0), 0, &[("eth0", values(0, 0)), ("net1", values(1, 0))]);
        assert_eq!(on.dad(), Some(true));
        let off = settings(values(0, 0), 0, &[("eth0", values(0, 0)), ("net1", values(0, 0))]);
        assert_eq!(off.dad(), Some(false));
        let unknown_accept = ConfValues {
            accept_dad: None,
            ..values(0, 0)
        };
        let partly = settings(values(0, 0), 0, &[("eth0", values(0, 0)), ("net1", unknown_accept)]);
        assert_eq!(partly.dad(), None);
        // No interface read: what a new interface copies.
        let fresh = PodSettings {
            all: values(0, 0),
            default: values(1, 0),
            ..PodSettings::default()
        };
        assert_eq!(fresh.dad(), Some(true));
        let tuned = PodSettings {
            default: values(0, 0),
            ..fresh.clone()
        };
        assert_eq!(tuned.dad(), Some(false));
        assert_eq!(PodSettings::unread("gone").dad(), None);
        let unread_with_values = PodSettings {
            unread: Some("timed out".into()),
            ..fresh
        };
        assert_eq!(unread_with_values.dad(), None);
    }

    /// Older sessions have no settings, and a settings object may lack any field.
    #[test]
    fn missing_fields_load_as_absent() {
        let read: PodSettings = serde_json::from_str(r#"{"all":{"accept_dad":1}}"#).expect("parses");
        assert_eq!(read.all.accept_dad, Some(1));
        assert_eq!(
            (read.all.dad_transmits, read.unread, read.interfaces.len()),
            (None, None, 0)
        );
        let text = serde_json::to_string(&PodSettings::unread("gone")).expect("serializes");
        assert!(
            text.contains(r#""unread":"gone""#) && !text.contains("interfaces_truncated"),
            "{text}"
        );
    }
}
