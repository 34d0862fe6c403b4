//! A session's addresses folded into what reports are made of, one address at a time as the
//! file is read: counts, the delays of settled addresses, and one running group per pod
//! namespace. A million addresses never sit in memory at once.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::session::{AddressEvent, Addresses, Outcome};

/// What a pod waited for: its first tentative address → its last address settled,
/// the wait a CNI plugin that checks for tentative addresses pays.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodDelay {
    pub pod: String,
    pub netns_inode: u32,
    pub addresses: usize,
    pub failed: usize,
    pub aborted: usize,
    pub first_tentative: DateTime<Utc>,
    pub last_settled: DateTime<Utc>,
    pub delay_ns: u64,
}

/// A namespace across merged sessions: node, inode, cookie (inodes are unique per node
/// only, and reused; cookies are not).
type NetnsKey = (Option<Arc<str>>, u32, Option<u64>);

/// The delays of one settled address.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Settled {
    tentative_ns: u64,
    dad_ns: Option<u64>,
    host: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub addresses: usize,
    pub settled: usize,
    pub failed: usize,
    pub aborted: usize,
    pub partial: usize,
    delays: Vec<Settled>,
    /// Pod namespaces (not the host's), with the first address's label.
    pods: HashMap<NetnsKey, PodDelay>,
    /// Node names, each kept once however many namespaces carry it.
    nodes: HashSet<Arc<str>>,
}

impl Addresses for Figures {
    fn add(&mut self, event: AddressEvent) {
        self.record(&event);
    }
}

impl<'a> FromIterator<&'a AddressEvent> for Figures {
    fn from_iter<I: IntoIterator<Item = &'a AddressEvent>>(events: I) -> Self {
        let mut figures = Figures::default();
        for event in events {
            figures.record(event);
        }
        figures
    }
}

impl Figures {
    pub fn record(&mut self, event: &AddressEvent) {
        self.addresses += 1;
        match event.outcome {
            Outcome::Settled => {
                self.settled += 1;
                self.delays.push(Settled {
                    tentative_ns: event.tentative_ns,
                    dad_ns: event.dad_ns,
                    host: event.host_netns,
                });
            }
            Outcome::Failed => self.failed += 1,
            Outcome::Aborted => self.aborted += 1,
        }
        self.partial += usize::from(event.partial);
        if event.host_netns {
            return;
        }
        let node = event.node.as_deref().map(|node| self.node(node));
        let (started, ended) = (event.started(), event.time);
        let pod = self
            .pods
            .entry((node, event.netns_inode, event.netns_cookie))
            .or_insert_with(|| PodDelay {
                pod: event.pod_label(),
                netns_inode: event.netns_inode,
                addresses: 0,
                failed: 0,
                aborted: 0,
                first_tentative: started,
                last_settled: ended,
                delay_ns: 0,
            });
        pod.addresses += 1;
        pod.failed += usize::from(event.outcome == Outcome::Failed);
        pod.aborted += usize::from(event.outcome == Outcome::Aborted);
        pod.first_tentative = pod.first_tentative.min(started);
        pod.last_settled = pod.last_settled.max(ended);
    }

    fn node(&mut self, name: &str) -> Arc<str> {
        if let Some(node) = self.nodes.get(name) {
            return Arc::clone(node);
        }
        let node: Arc<str> = name.into();
        self.nodes.insert(Arc::clone(&node));
        node
    }

    /// Tentative delay of every settled address.
    #[must_use]
    pub fn tentative(&self) -> Vec<u64> {
        self.delays.iter().map(|settled| settled.tentative_ns).collect()
    }

    /// Tentative delay of the settled addresses in pod namespaces (not the host's).
    #[must_use]
    pub fn pod_tentative(&self) -> Vec<u64> {
        self.delays
            .iter()
            .filter(|settled| !settled.host)
            .map(|settled| settled.tentative_ns)
            .collect()
    }

    /// DAD delay of the settled addresses that ran DAD.
    #[must_use]
    pub fn dad(&self) -> Vec<u64> {
        self.delays.iter().filter_map(|settled| settled.dad_ns).collect()
    }

    /// Every pod namespace's delay, in the order the pods started.
    #[must_use]
    pub fn pod_delays(&self) -> Vec<PodDelay> {
        let mut pods: Vec<PodDelay> = self
            .pods
            .values()
            .map(|pod| PodDelay {
                delay_ns: u64::try_from((pod.last_settled - pod.first_tentative).num_nanoseconds().unwrap_or(0))
                    .unwrap_or(0),
                ..pod.clone()
            })
            .collect();
        pods.sort_by(|a, b| {
            a.first_tentative
                .cmp(&b.first_tentative)
                .then_with(|| a.pod.cmp(&b.pod))
        });
        pods
    }

    /// Namespaces not yet tied to a node are `node`'s (merging sessions of several nodes).
    pub fn tag_node(&mut self, node: &str) {
        if self.pods.keys().all(|(tagged, ..)| tagged.is_some()) {
            return;
        }
        let node = self.node(node);
        self.pods = std::mem::take(&mut self.pods)
            .into_iter()
            .map(|((tagged, inode, cookie), pod)| ((tagged.or_else(|| Some(Arc::clone(&node))), inode, cookie), pod))
            .collect();
    }

    /// Adds another session's figures; the same namespace in both is one pod.
    pub fn merge(&mut self, other: Figures) {
        self.addresses += other.addresses;
        self.settled += other.settled;
        self.failed += other.failed;
        self.aborted += other.aborted;
        self.partial += other.partial;
        self.delays.extend(other.delays);
        for ((node, inode, cookie), pod) in other.pods {
            let node = node.map(|node| self.node(&node));
            match self.pods.entry((node, inode, cookie)) {
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(pod);
                }
                std::collections::hash_map::Entry::Occupied(mut entry) => {
                    let mine = entry.get_mut();
                    if pod.first_tentative < mine.first_tentative {
                        mine.pod = pod.pod;
                    }
                    mine.addresses += pod.addresses;
                    mine.failed += pod.failed;
                    mine.aborted += pod.aborted;
                    mine.first_tentative = mine.first_tentative.min(pod.first_tentative);
                    mine.last_settled = mine.last_settled.max(pod.last_settled);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        report::summary::tests::{event, session},
        session::Session,
    };

    /// What a report folds while reading a file is what it would fold from the session kept
    /// whole: the file path and the in-memory path give the same figures.
    #[test]
    fn figures_read_from_a_file_are_those_of_the_kept_session() {
        let mut kept = session(vec![
            event(10, 0, 1500, Some(1400), Outcome::Settled),
            event(10, 100, 2000, None, Outcome::Settled),
            event(11, 50, 300, Some(200), Outcome::Failed),
            event(12, 0, 10, None, Outcome::Aborted),
            event(1, 0, 3000, Some(2900), Outcome::Settled),
        ]);
        kept.events[1].partial = true;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        kept.save(&path).expect("save");
        let read = Session::<Figures>::load_as(&path).expect("load");
        let folded = kept.fold::<Figures>();
        assert_eq!(read, folded);
        let figures = &read.events;
        assert_eq!(
            (
                figures.addresses,
                figures.settled,
                figures.failed,
                figures.aborted,
                figures.partial
            ),
            (5, 3, 1, 1, 1)
        );
        let ms = |values: Vec<u64>| values.into_iter().map(|ns| ns / 1_000_000).collect::<Vec<_>>();
        assert_eq!(ms(figures.tentative()), [1500, 2000, 3000]);
        assert_eq!(ms(figures.pod_tentative()), [1500, 2000], "the host's is not a pod's");
        assert_eq!(ms(figures.dad()), [1400, 2900], "only addresses that ran DAD");
        let pods: Vec<_> = figures
            .pod_delays()
            .into_iter()
            .map(|pod| {
                (
                    pod.pod,
                    pod.addresses,
                    pod.failed,
                    pod.aborted,
                    pod.delay_ns / 1_000_000,
                )
            })
            .collect();
        assert_eq!(
            pods,
            [
                ("pod-10".to_string(), 2, 0, 0, 2100),
                ("pod-12".to_string(), 1, 0, 1, 10),
                ("pod-11".to_string(), 1, 1, 0, 300),
            ],
            "in the order the pods started, ties by name"
        );
    }

    /// The first address of a namespace names its pod; later ones with other names do not.
    #[test]
    fn a_pod_is_named_by_its_first_address() {
        let mut first = event(10, 0, 1500, None, Outcome::Settled);
        first.netns_name = Some("cni-first".into());
        let mut second = event(10, 10, 1500, None, Outcome::Settled);
        second.netns_name = Some("cni-renamed".into());
        let figures: Figures = [&first, &second].into_iter().collect();
        assert_eq!(figures.pod_delays()[0].pod, "cni-first");
    }

    /// Merged nodes keep their namespaces apart even with equal inodes; the same namespace
    /// read twice on one node is one pod, named by its earlier address.
    #[test]
    fn merging_keeps_nodes_apart_and_joins_a_namespace_seen_twice() {
        let fold = |events: &[AddressEvent], node: &str| {
            let mut figures: Figures = events.iter().collect();
            figures.tag_node(node);
            figures
        };
        let mut early = event(10, 0, 1000, None, Outcome::Settled);
        early.netns_name = Some("early".into());
        let mut late = event(10, 500, 1000, None, Outcome::Failed);
        late.netns_name = Some("late".into());
        let mut merged = fold(std::slice::from_ref(&late), "node-a");
        merged.merge(fold(std::slice::from_ref(&early), "node-a"));
        merged.merge(fold(&[event(10, 0, 700, None, Outcome::Aborted)], "node-b"));
        let pods = merged.pod_delays();
        assert_eq!(merged.addresses, 3);
        assert_eq!(pods.len(), 2, "{pods:?}");
        let on_a = pods.iter().find(|pod| pod.pod == "early").expect("node-a's pod");
        assert_eq!(
            (on_a.addresses, on_a.failed, on_a.delay_ns),
            (2, 1, 1_500_000_000),
            "first start to last end across both reads"
        );
        // Tagging again changes nothing: a namespace keeps the node it was read with.
        let before = merged.clone();
        merged.tag_node("node-c");
        assert_eq!(merged, before);
    }

    /// `report --merge` across nodes: every count is the sum of both sides', the delays of
    /// both are kept, and one namespace read twice sums its own counts.
    #[test]
    fn merging_adds_every_count() {
        let with = |outcome, partial: bool, inode: u32, start_ms: i64| {
            let mut event = event(inode, start_ms, 100, Some(90), outcome);
            event.partial = partial;
            event
        };
        let left = [
            with(Outcome::Settled, true, 10, 200),
            with(Outcome::Settled, false, 10, 300),
            with(Outcome::Failed, true, 10, 250),
            with(Outcome::Aborted, false, 10, 400),
            with(Outcome::Settled, false, 1, 0),
        ];
        let right = [
            with(Outcome::Settled, true, 10, 100),
            with(Outcome::Failed, true, 10, 150),
            with(Outcome::Failed, false, 10, 160),
            with(Outcome::Aborted, true, 10, 170),
            with(Outcome::Aborted, false, 11, 180),
        ];
        let mut merged: Figures = left.iter().collect();
        let mut renamed = right.clone();
        renamed[0].netns_name = Some("earlier".into());
        merged.merge(renamed.iter().collect());
        assert_eq!(
            (
                merged.addresses,
                merged.settled,
                merged.failed,
                merged.aborted,
                merged.partial
            ),
            (10, 4, 3, 3, 5)
        );
        assert_eq!(merged.tentative().len(), 4, "the delays of both");
        assert_eq!(merged.dad().len(), 4);
        assert_eq!(merged.pod_tentative().len(), 3, "the host's is not a pod's");
        let pods = merged.pod_delays();
        assert_eq!(pods.len(), 2, "{pods:?}");
        assert_eq!(
            (pods[0].pod.as_str(), pods[0].addresses, pods[0].failed, pods[0].aborted),
            ("earlier", 8, 3, 2),
            "one namespace, named by its earliest address"
        );
        assert_eq!(
            pods[0].delay_ns,
            400 * 1_000_000,
            "from the earliest start (100 ms) to the latest end (500 ms)"
        );
        assert_eq!((pods[1].pod.as_str(), pods[1].aborted), ("pod-11", 1));
        // The later side's name never wins, whichever side is merged into which.
        let mut reversed: Figures = renamed.iter().collect();
        reversed.merge(left.iter().collect());
        assert_eq!(reversed.pod_delays()[0].pod, "earlier");
        // Equal starts keep the name already there.
        let mut tie: Figures = [&left[0]].into_iter().collect();
        let mut same_start = left[0].clone();
        same_start.netns_name = Some("other".into());
        tie.merge([&same_start].into_iter().collect());
        assert_eq!(tie.pod_delays()[0].pod, "pod-10");
    }
}
