//! Which finished addresses a recording shows, counts and keeps (`--namespace`, `--pod`,
//! `--netns`, `--ifname`): shell-style globs, all of which must match.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use glob::Pattern;

use crate::{
    record::cni::TracedCall,
    session::{AddressEvent, Pod},
};

#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// The pod's Kubernetes namespace.
    pub namespace: Option<Pattern>,
    /// The pod's name, or its label (`namespace/name`, the netns name, `host`).
    pub pod: Option<Pattern>,
    /// The network namespace's name under /run/netns, or its inode.
    pub netns: Option<Pattern>,
    pub ifname: Option<Pattern>,
}

impl Filter {
    /// Whether no pattern is set (everything passes).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.pod.is_none() && self.netns.is_none() && self.ifname.is_none()
    }

    #[must_use]
    pub fn admits(&self, event: &AddressEvent) -> bool {
        self.admits_names(
            event.pod.as_ref(),
            &event.pod_label(),
            event.netns_name.as_deref(),
            event.netns_inode,
            Some(&event.ifname),
        )
    }

    /// A CNI call, by its pod and namespace as it names them (`CNI_NETNS`'s file name for a
    /// namespace name, `CNI_IFNAME` for the interface).
    #[must_use]
    pub fn admits_call(&self, traced: &TracedCall) -> bool {
        self.admits_names(
            traced.pod.as_ref(),
            &traced.label(),
            traced.netns_name(),
            traced.netns_inode.unwrap_or(0),
            traced.call.ifname.as_deref(),
        )
    }

    fn admits_names(
        &self,
        pod: Option<&Pod>,
        label: &str,
        netns_name: Option<&str>,
        netns_inode: u32,
        ifname: Option<&str>,
    ) -> bool {
        let namespace_ok = self.namespace.as_ref().is_none_or(|pattern| {
            pod.and_then(|pod| pod.namespace.as_deref())
                .is_some_and(|namespace| pattern.matches(namespace))
        });
        let pod_ok = self.pod.as_ref().is_none_or(|pattern| {
            pod.and_then(|pod| pod.name.as_deref())
                .is_some_and(|name| pattern.matches(name))
                || pattern.matches(label)
        });
        let netns_ok = self.netns.as_ref().is_none_or(|pattern| {
            netns_name.is_some_and(|name| pattern.matches(name)) || pattern.matches(&netns_inode.to_string())
        });
        let ifname_ok = self
            .ifname
            .as_ref()
            .is_none_or(|pattern| ifname.is_some_and(|name| pattern.matches(name)));
        namespace_ok && pod_ok && netns_ok && ifname_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Pod;

    fn pattern(text: &str) -> Option<Pattern> {
        Pattern::new(text).ok()
    }

    #[test]
    fn every_set_pattern_must_match() {
        let mut event = crate::session::tests::sample().events.remove(0);
        event.pod = Some(Pod {
            namespace: Some("team-a".into()),
            name: Some("web-1".into()),
            ..Pod::default()
        });
        assert!(Filter::default().admits(&event) && Filter::default().is_empty());
        let only = |filter: Filter| filter.admits(&event);
        assert!(only(Filter {
            namespace: pattern("team-*"),
            ..Filter::default()
        }));
        assert!(!only(Filter {
            namespace: pattern("team-b"),
            ..Filter::default()
        }));
        assert!(only(Filter {
            pod: pattern("web-?"),
            ..Filter::default()
        }));
        assert!(
            only(Filter {
                pod: pattern("team-a/*"),
                ..Filter::default()
            }),
            "the label"
        );
        assert!(!only(Filter {
            pod: pattern("db-*"),
            ..Filter::default()
        }));
        assert!(only(Filter {
            netns: pattern("dt-pod-*"),
            ..Filter::default()
        }));
        assert!(
            only(Filter {
                netns: pattern("4026532300"),
                ..Filter::default()
            }),
            "the inode"
        );
        assert!(!only(Filter {
            ifname: pattern("veth*"),
            ..Filter::default()
        }));
        let both = Filter {
            namespace: pattern("team-a"),
            ifname: pattern("eth1"),
            ..Filter::default()
        };
        assert!(!both.admits(&event), "all patterns must match");
        event.pod = None;
        let any_namespace = Filter {
            namespace: pattern("*"),
            ..Filter::default()
        };
        assert!(!any_namespace.admits(&event), "no namespace, no match");
    }

    /// Any one pattern makes a filter (and the recording keeps only what it admits).
    #[test]
    fn one_pattern_is_enough_to_filter() {
        assert!(Filter::default().is_empty());
        for filter in [
            Filter {
                namespace: pattern("a"),
                ..Filter::default()
            },
            Filter {
                pod: pattern("a"),
                ..Filter::default()
            },
            Filter {
                netns: pattern("a"),
                ..Filter::default()
            },
            Filter {
                ifname: pattern("a"),
                ..Filter::default()
            },
        ] {
            assert!(!filter.is_empty(), "{filter:?}");
        }
    }

    #[test]
    fn calls_are_filtered_by_their_pod_namespace_and_interface() {
        let traced = TracedCall {
            call: crate::session::CniCall {
                command: Some("ADD".into()),
                plugin: "/opt/cni/bin/ptp".into(),
                container_id: Some("sandbox-1".into()),
                netns: Some("/var/run/netns/cni-1234".into()),
                ifname: Some("eth0".into()),
                pid: 50,
                ppid: 1,
                start: chrono::DateTime::UNIX_EPOCH,
                duration_ns: None,
                exit_status: None,
                exit_signal: None,
                env_truncated: false,
                trace_parent: None,
                trace_state: None,
                delegates: Vec::new(),
            },
            netns_inode: Some(4_026_532_400),
            pod: Some(Pod {
                namespace: Some("team-a".into()),
                name: Some("web-1".into()),
                ..Pod::default()
            }),
        };
        let admits = |filter: Filter| filter.admits_call(&traced);
        assert!(admits(Filter::default()));
        for admitted in [
            Filter {
                namespace: pattern("team-*"),
                ..Filter::default()
            },
            Filter {
                pod: pattern("team-a/web-1"),
                ..Filter::default()
            },
            Filter {
                netns: pattern("cni-1234"),
                ..Filter::default()
            },
            Filter {
                netns: pattern("4026532400"),
                ..Filter::default()
            },
            Filter {
                ifname: pattern("eth0"),
                ..Filter::default()
            },
        ] {
            assert!(admits(admitted.clone()), "{admitted:?}");
        }
        for refused in [
            Filter {
                namespace: pattern("team-b"),
                ..Filter::default()
            },
            Filter {
                pod: pattern("db-*"),
                ..Filter::default()
            },
            Filter {
                netns: pattern("4026532401"),
                ..Filter::default()
            },
            Filter {
                ifname: pattern("net1"),
                ..Filter::default()
            },
        ] {
            assert!(!admits(refused.clone()), "{refused:?}");
        }
        let unnamed = TracedCall {
            call: crate::session::CniCall {
                ifname: None,
                netns: None,
                ..traced.call.clone()
            },
            netns_inode: None,
            pod: None,
        };
        assert!(
            !Filter {
                ifname: pattern("*"),
                ..Filter::default()
            }
            .admits_call(&unnamed),
            "no interface, no match"
        );
        assert!(
            Filter {
                netns: pattern("0"),
                pod: pattern("netns:0"),
                ..Filter::default()
            }
            .admits_call(&unnamed),
            "an unresolved namespace is inode 0"
        );
    }
}
