//! Which finished addresses a recording shows, counts and keeps (`--namespace`, `--pod`,
//! `--netns`, `--ifname`): shell-style globs, all of which must match.
use glob::Pattern;

use crate::session::AddressEvent;

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
        let pod = event.pod.as_ref();
        let namespace_ok = self.namespace.as_ref().is_none_or(|pattern| {
            pod.and_then(|pod| pod.namespace.as_deref())
                .is_some_and(|namespace| pattern.matches(namespace))
        });
        let pod_ok = self.pod.as_ref().is_none_or(|pattern| {
            pod.and_then(|pod| pod.name.as_deref())
                .is_some_and(|name| pattern.matches(name))
                || pattern.matches(&event.pod_label())
        });
        let netns_ok = self.netns.as_ref().is_none_or(|pattern| {
            event.netns_name.as_deref().is_some_and(|name| pattern.matches(name))
                || pattern.matches(&event.netns_inode.to_string())
        });
        let ifname_ok = self
            .ifname
            .as_ref()
            .is_none_or(|pattern| pattern.matches(&event.ifname));
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
}
