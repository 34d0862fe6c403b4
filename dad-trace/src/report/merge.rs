//! One session from several (e.g. one per node): events are stored one by one, so merging
//! loses nothing.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use anyhow::Context as _;

use super::figures::Figures;
use crate::session::Session;

/// One session from several (e.g. one per node): events, pods, CNI counts, lost counts and
/// unfinished addresses are combined; the first session's backend and kernel head the result.
pub fn merge(mut sessions: Vec<Session<Figures>>) -> anyhow::Result<Session<Figures>> {
    anyhow::ensure!(!sessions.is_empty(), "nothing to merge");
    if sessions.len() == 1 {
        return Ok(sessions.remove(0));
    }
    for session in &mut sessions {
        session.events.tag_node(&session.hostname);
        for pod in &mut session.pods {
            pod.node.get_or_insert_with(|| session.hostname.clone());
        }
    }
    let mut merged = sessions.remove(0);
    for session in sessions {
        if !merged.hostname.split('+').any(|host| host == session.hostname) {
            merged.hostname = format!("{}+{}", merged.hostname, session.hostname);
        }
        merged.started_at = merged.started_at.min(session.started_at);
        merged.ended_at = merged.ended_at.max(session.ended_at);
        merged.lost_events = merged.lost_events.checked_add(session.lost_events).with_context(|| {
            format!(
                "lost_events of {} ({}) and the others ({}) add up past 2^64: a corrupt session",
                session.hostname, session.lost_events, merged.lost_events
            )
        })?;
        merged.events.merge(session.events);
        merged.unfinished.extend(session.unfinished);
        merged.pods.extend(session.pods);
        merged.cni = match (merged.cni.take(), session.cni) {
            (Some(mut first), Some(other)) => {
                first.lost_records = first.lost_records.saturating_add(other.lost_records);
                first.env_truncated = first.env_truncated.saturating_add(other.env_truncated);
                first.calls_without_pod.extend(other.calls_without_pod);
                for dir in other.bin_dirs {
                    if !first.bin_dirs.contains(&dir) {
                        first.bin_dirs.push(dir);
                    }
                }
                Some(first)
            }
            (first, other) => first.or(other),
        };
    }
    merged
        .pods
        .sort_by_key(|pod| pod.timeline.add_start.or(pod.timeline.first_tentative));
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::compare::tests::session;

    #[test]
    fn merge_combines_nodes() {
        let mut a = session("node-a", &[1500, 1800], "0");
        a.lost_events = 1;
        let b = session("node-b", &[1600], "0");
        let merged = merge(vec![a.fold(), b.fold()]).expect("two sessions");
        assert_eq!(
            (merged.events.addresses, merged.lost_events, merged.hostname.as_str()),
            (3, 1, "node-a+node-b")
        );
        // Same namespace inode on two nodes: two pods, not one.
        assert_eq!(merged.events.pod_delays().len(), 3);
        assert!(merge(Vec::new()).is_err());
        // Counts are never wrapped: u64::MAX + 2 is refused, not shown as 1.
        let mut huge = session("node-c", &[1500], "0");
        huge.lost_events = u64::MAX;
        let mut two = session("node-d", &[1500], "0");
        two.lost_events = 2;
        let error = merge(vec![huge.fold(), two.fold()]).expect_err("overflow refused");
        assert!(format!("{error:#}").contains("lost_events of node-d"), "{error:#}");
    }

    /// CNI tracing of several nodes: counts add up, each plugin directory is listed once.
    #[test]
    fn cni_tracing_is_combined() {
        let tracing = |dirs: &[&str], lost: u64, truncated: u64| {
            Some(crate::session::CniTracing {
                bin_dirs: dirs.iter().map(ToString::to_string).collect(),
                lost_records: lost,
                env_truncated: truncated,
                calls_without_pod: Vec::new(),
            })
        };
        let mut a = session("node-a", &[1500], "0");
        a.cni = tracing(&["/opt/cni/bin/"], 1, 2);
        let mut b = session("node-b", &[1600], "0");
        b.cni = tracing(&["/opt/cni/bin/", "/usr/lib/cni/"], 3, 4);
        let c = session("node-c", &[1700], "0");
        let merged = merge(vec![a.fold(), b.fold(), c.fold()]).expect("three sessions");
        assert_eq!(merged.cni, tracing(&["/opt/cni/bin/", "/usr/lib/cni/"], 4, 6));
        assert_eq!(merged.hostname, "node-a+node-b+node-c");
        let again = merge(vec![
            session("node-a", &[1], "0").fold(),
            session("node-a", &[2], "0").fold(),
        ])
        .expect("two reads of one node");
        assert_eq!(again.hostname, "node-a", "a node is named once");
    }
}
