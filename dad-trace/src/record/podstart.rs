//! The session's pods: per pod namespace, its CNI calls, the timeline from the runtime's
//! sandbox to its first container, and DAD's wait inside the ADD. Built once, when a
//! recording ends, from the addresses and calls it kept and what the runtime says.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{
    cni::TracedCall,
    identity::{SandboxIdentity, merge_identity},
};
use crate::{
    kernel::events::NetnsId,
    session::{AddressEvent, CniCall, Outcome, PodSettings, PodStart, Timeline, pods::overlap_ns},
};

/// The longest `netns_name` taken from a `CNI_NETNS` path (a file name: `NAME_MAX`).
const MAX_NAME: usize = 255;

fn span_ns(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<u64> {
    u64::try_from((to - from).num_nanoseconds()?).ok()
}

/// What the runtime says of a namespace (inode) or a sandbox (id).
pub type Runtime<'a> = dyn FnMut(Option<u32>, Option<&str>) -> Option<SandboxIdentity> + 'a;

/// The addresses of one namespace.
type Group<'e> = Vec<&'e AddressEvent>;

/// The pods, and the top-level calls tied to none. `host_inode` is the node's own namespace
/// (no pod); `runtime` answers for a namespace or a sandbox id (see
/// [`super::recorder::Enrich::sandbox_of`]).
pub fn build(
    events: &[AddressEvent],
    calls: Vec<TracedCall>,
    host_inode: u32,
    runtime: &mut Runtime<'_>,
) -> (Vec<PodStart>, Vec<CniCall>) {
    // A namespace is its inode and cookie: an inode may name two namespaces in turn.
    let mut groups: BTreeMap<u32, Vec<(Option<u64>, Group)>> = BTreeMap::new();
    for event in events.iter().filter(|event| !event.host_netns) {
        let cookies = groups.entry(event.netns_inode).or_default();
        match cookies.iter_mut().find(|(cookie, _)| *cookie == event.netns_cookie) {
            Some((_, group)) => group.push(event),
            None => cookies.push((event.netns_cookie, vec![event])),
        }
    }
    let inode_of_sandbox: BTreeMap<String, u32> = calls
        .iter()
        .filter_map(|traced| Some((traced.call.container_id.clone()?, traced.netns_inode?)))
        .collect();
    let mut by_inode: BTreeMap<u32, Vec<TracedCall>> = BTreeMap::new();
    let mut without_pod = Vec::new();
    for traced in calls {
        // A DEL may come when the namespace is gone: its sandbox's ADD names it.
        let inode = traced.netns_inode.or_else(|| {
            traced
                .call
                .container_id
                .as_ref()
                .and_then(|id| inode_of_sandbox.get(id).copied())
        });
        match inode.filter(|inode| *inode != host_inode) {
            Some(inode) => by_inode.entry(inode).or_default().push(traced),
            None => without_pod.push(traced.call),
        }
    }
    for inode in by_inode.keys() {
        groups.entry(*inode).or_insert_with(|| vec![(None, Vec::new())]);
    }
    let mut pods = Vec::new();
    for (inode, mut cookies) in groups {
        let mut calls = by_inode.remove(&inode).unwrap_or_default();
        calls.sort_by_key(|traced| traced.call.start);
        cookies.sort_by_key(|(_, group)| first_tentative(group));
        let firsts: Vec<Option<DateTime<Utc>>> = cookies.iter().map(|(_, group)| first_tentative(group)).collect();
        let mut shares: Vec<Vec<TracedCall>> = cookies.iter().map(|_| Vec::new()).collect();
        let mut sandbox_at: BTreeMap<String, usize> = BTreeMap::new();
        for traced in calls {
            let index = namespace_of(&traced.call, &firsts, &sandbox_at);
            if traced.call.is("ADD")
                && let Some(id) = &traced.call.container_id
            {
                sandbox_at.insert(id.clone(), index);
            }
            shares[index].push(traced);
        }
        for ((cookie, group), mine) in cookies.into_iter().zip(shares) {
            pods.push(pod(inode, cookie, &group, mine, runtime));
        }
    }
    pods.sort_by_key(|pod| pod.timeline.add_start.or(pod.timeline.first_tentative));
    (pods, without_pod)
}

/// Which of the namespaces that had one inode in turn (first addresses `firsts`, in order) a
/// call was for: an ADD (calls come in start order) sets its namespace up, so the first whose
/// addresses came after it started; another call, the namespace of its sandbox's ADD.
fn namespace_of(call: &CniCall, firsts: &[Option<DateTime<Utc>>], sandbox_at: &BTreeMap<String, usize>) -> usize {
    let last = firsts.len().saturating_sub(1);
    if !call.is("ADD")
        && let Some(index) = call.container_id.as_ref().and_then(|id| sandbox_at.get(id))
    {
        return *index;
    }
    firsts
        .iter()
        .position(|first| first.is_some_and(|first| first >= call.start))
        .unwrap_or(last)
}

fn first_tentative(group: &[&AddressEvent]) -> Option<DateTime<Utc>> {
    group.iter().map(|event| event.started()).min()
}

fn pod(
    inode: u32,
    cookie: Option<u64>,
    group: &[&AddressEvent],
    mut calls: Vec<TracedCall>,
    runtime: &mut Runtime<'_>,
) -> PodStart {
    calls.sort_by_key(|traced| traced.call.start);
    let adds: Vec<&CniCall> = calls
        .iter()
        .map(|traced| &traced.call)
        .filter(|call| call.is("ADD"))
        .collect();
    let add_start = adds.iter().map(|call| call.start).min();
    // Every ADD must have ended for the ADD to have.
    let add_end = adds
        .iter()
        .map(|call| call.end())
        .collect::<Option<Vec<_>>>()
        .and_then(|ends| ends.into_iter().max());
    let first = first_tentative(group);
    let last = group
        .iter()
        .filter(|event| event.outcome == Outcome::Settled)
        .map(|event| event.time)
        .max();
    let dad_wait_ns = match (add_start.zip(add_end), first.zip(last)) {
        (Some(add), Some(addresses)) => Some(overlap_ns(addresses, add)),
        // An ADD whose namespace had no address to wait for (IPv4 only, DAD off and unseen).
        (Some(_), None) => Some(0),
        (None, Some((first, last))) => span_ns(first, last),
        (None, None) => None,
    };
    // An optimistic address is usable from its start, the others once settled.
    let usable = group
        .iter()
        .map(|event| if event.optimistic { event.started() } else { event.time })
        .max();
    let waited_while_usable_ns = match (add_start.zip(add_end), usable.zip(last)) {
        (Some(add), Some(window)) if group.iter().any(|event| event.optimistic) => Some(overlap_ns(window, add)),
        _ => None,
    };
    let sandbox_id = calls.iter().find_map(|traced| traced.call.container_id.clone());
    let identity = runtime(Some(inode), sandbox_id.as_deref());
    let mut pod_identity = group
        .iter()
        .find_map(|event| event.pod.clone().filter(|pod| pod.name.is_some()))
        .or_else(|| calls.iter().find_map(|traced| traced.pod.clone()))
        .or_else(|| group.iter().find_map(|event| event.pod.clone()));
    let (sandbox_created, container_started) = identity.as_ref().map_or((None, None), |identity| {
        (identity.created_at, identity.first_container_started)
    });
    if let Some(identity) = identity {
        merge_identity(&mut pod_identity, identity);
    }
    let netns_name = group.iter().find_map(|event| event.netns_name.clone()).or_else(|| {
        calls
            .iter()
            .find_map(|traced| traced.call.netns.as_deref()?.rsplit('/').next().map(str::to_string))
            .filter(|name| !name.is_empty() && name.len() <= MAX_NAME)
    });
    PodStart {
        netns_inode: inode,
        netns_cookie: cookie,
        netns_name,
        pod: pod_identity,
        node: None,
        cni_add_ns: add_start.zip(add_end).and_then(|(start, end)| span_ns(start, end)),
        dad_wait_ns,
        waited_while_usable_ns,
        pod_start_ns: sandbox_created
            .zip(container_started)
            .and_then(|(created, started)| span_ns(created, started)),
        timeline: Timeline {
            sandbox_created,
            add_start,
            add_end,
            first_tentative: first,
            last_settled: last,
            container_started,
        },
        cni_calls: calls.into_iter().map(|traced| traced.call).collect(),
        settings: None,
    }
}

/// Gives each pod the settings read for its namespace (`read`, in the order they were read):
/// those of its cookie; where the pod's or the reading's cookie is unknown, the first read
/// under its inode that no other pod took by cookie.
pub fn attach_settings(pods: &mut [PodStart], mut read: Vec<(NetnsId, PodSettings)>) {
    for pod in pods.iter_mut() {
        let cookie = pod.netns_cookie.filter(|cookie| *cookie != 0);
        let exact = read
            .iter()
            .position(|(netns, _)| netns.inode == pod.netns_inode && cookie.is_some_and(|c| c == netns.cookie));
        if let Some(index) = exact {
            pod.settings = Some(read.remove(index).1);
        }
    }
    for pod in pods.iter_mut().filter(|pod| pod.settings.is_none()) {
        let cookie = pod.netns_cookie.filter(|cookie| *cookie != 0);
        let loose = read
            .iter()
            .position(|(netns, _)| netns.inode == pod.netns_inode && (cookie.is_none() || netns.cookie == 0));
        if let Some(index) = loose {
            pod.settings = Some(read.remove(index).1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        report::summary::tests::event,
        session::{Outcome, Pod},
    };

    const MS: u64 = 1_000_000;

    fn at(ms: i64) -> DateTime<Utc> {
        "2026-11-25T20:00:00Z".parse::<DateTime<Utc>>().expect("literal") + chrono::Duration::milliseconds(ms)
    }

    fn call(command: &str, start_ms: i64, duration_ms: Option<u64>, inode: Option<u32>) -> TracedCall {
        TracedCall {
            call: CniCall {
                command: Some(command.into()),
                plugin: "/usr/lib/cni/ptp".into(),
                container_id: Some("sandbox-10".into()),
                netns: Some("/run/netns/cni-10".into()),
                ifname: Some("eth0".into()),
                pid: 50,
                ppid: 1,
                start: at(start_ms),
                duration_ns: duration_ms.map(|ms| ms * MS),
                exit_status: Some(0),
                exit_signal: None,
                env_truncated: false,
                trace_parent: None,
                trace_state: None,
                delegates: Vec::new(),
            },
            netns_inode: inode,
            pod: None,
        }
    }

    fn no_runtime(_: Option<u32>, _: Option<&str>) -> Option<SandboxIdentity> {
        None
    }

    /// ptp's ADD waits for the pod's addresses: DAD is most of it; the DEL comes after the
    /// namespace is gone and still finds its pod through the sandbox id.
    #[test]
    fn an_add_that_waits_for_dad_and_its_del() {
        let events = vec![
            // Link-local tentative at 20 ms, settled 1520; the pod address at 30, settled 1930.
            event(10, 20, 1500, Some(1400), Outcome::Settled),
            event(10, 30, 1900, Some(1800), Outcome::Settled),
        ];
        let calls = vec![call("ADD", 0, Some(1950), Some(10)), call("DEL", 5000, Some(30), None)];
        let (pods, without) = build(&events, calls, 1, &mut no_runtime);
        assert!(without.is_empty());
        assert_eq!(pods.len(), 1);
        let pod = &pods[0];
        assert_eq!(pod.cni_add_ns, Some(1950 * MS));
        assert_eq!(pod.dad_wait_ns, Some(1910 * MS), "20 ms → 1930 ms, inside the ADD");
        assert_eq!(pod.pod_start_ns, None, "no runtime said");
        assert_eq!(pod.timeline.add_end, Some(at(1950)));
        assert_eq!(pod.cni_calls.len(), 2);
        assert!(pod.dad_share_of_add().is_some_and(|share| share > 0.97));
        assert_eq!(pod.netns_name.as_deref(), Some("pod-10"));
    }

    /// Optimistic addresses are usable from their start: what the ADD waited after every
    /// address was usable is the plugin's wait, said apart. None without optimistic ones.
    #[test]
    fn an_add_that_waits_though_its_addresses_are_usable() {
        let mut optimistic = event(10, 30, 1900, Some(1800), Outcome::Settled);
        optimistic.optimistic = true;
        // Link-local (not optimistic) settles at 520; the pod address usable from 30.
        let events = vec![event(10, 20, 500, Some(400), Outcome::Settled), optimistic];
        let calls = vec![call("ADD", 0, Some(1950), Some(10))];
        let (pods, _) = build(&events, calls.clone(), 1, &mut no_runtime);
        // Usable at 520 (the link-local settled), the last settled at 1930: 1410 ms waited.
        assert_eq!(pods[0].waited_while_usable_ns, Some(1410 * MS));
        assert_eq!(pods[0].dad_wait_ns, Some(1910 * MS));
        let plain = vec![event(10, 20, 500, Some(400), Outcome::Settled)];
        let (pods, _) = build(&plain, calls, 1, &mut no_runtime);
        assert_eq!(pods[0].waited_while_usable_ns, None);
        let (pods, _) = build(&events, Vec::new(), 1, &mut no_runtime);
        assert_eq!(pods[0].waited_while_usable_ns, None, "no ADD to have waited");
    }

    #[test]
    fn runtime_times_make_the_pod_start_and_name_it() {
        let events = vec![event(10, 120, 1500, Some(1400), Outcome::Settled)];
        let mut runtime = |inode: Option<u32>, _: Option<&str>| {
            (inode == Some(10)).then(|| SandboxIdentity {
                sandbox_id: "sandbox-10".into(),
                namespace: "team-a".into(),
                name: "web-0".into(),
                uid: "u".into(),
                netns_path: None,
                pid: None,
                created_at: Some(at(-50)),
                first_container_started: Some(at(2400)),
            })
        };
        let (pods, _) = build(&events, vec![call("ADD", 100, Some(1600), Some(10))], 1, &mut runtime);
        let pod = &pods[0];
        assert_eq!(pod.pod_start_ns, Some(2450 * MS));
        assert_eq!(pod.label(), "team-a/web-0");
        assert_eq!(pod.timeline.sandbox_created, Some(at(-50)));
        assert!(
            pod.dad_share_of_start()
                .is_some_and(|share| (share - 1500.0 / 2450.0).abs() < 1e-9)
        );
    }

    #[test]
    fn calls_of_no_pod_and_pods_of_no_call() {
        let events = vec![event(11, 0, 1000, None, Outcome::Settled)];
        let mut version = call("VERSION", 0, Some(2), None);
        version.call.container_id = None;
        let host = call("ADD", 0, Some(5), Some(1));
        let (pods, without) = build(&events, vec![version, host], 1, &mut no_runtime);
        assert_eq!(without.len(), 2, "no namespace, and the host's");
        assert_eq!(pods.len(), 1);
        assert_eq!((pods[0].cni_add_ns, pods[0].dad_wait_ns), (None, Some(1000 * MS)));
        // An ADD whose namespace had no address (IPv4 only): no wait; an unfinished ADD: no time.
        let mut named = call("ADD", 0, Some(40), Some(12));
        named.pod = Some(Pod {
            name: Some("v4-only".into()),
            ..Pod::default()
        });
        let (pods, _) = build(&[], vec![named, call("ADD", 0, None, Some(13))], 1, &mut no_runtime);
        assert_eq!((pods[0].dad_wait_ns, pods[0].cni_add_ns), (Some(0), Some(40 * MS)));
        assert_eq!(
            pods[0].pod.as_ref().and_then(|pod| pod.name.as_deref()),
            Some("v4-only")
        );
        assert_eq!(pods[1].cni_add_ns, None);
        assert_eq!(pods[1].netns_name.as_deref(), Some("cni-10"), "from the CNI_NETNS path");
    }

    /// The kernel reuses a dead namespace's inode: two namespaces, each with its own ADD.
    #[test]
    fn a_reused_inode_is_two_pods() {
        let mut first = event(10, 10, 1000, None, Outcome::Settled);
        first.netns_cookie = Some(1);
        let mut second = event(10, 5010, 1000, None, Outcome::Settled);
        second.netns_cookie = Some(2);
        let calls = vec![
            call("ADD", 0, Some(1100), Some(10)),
            call("ADD", 5000, Some(1100), Some(10)),
        ];
        let (pods, _) = build(&[first, second], calls, 1, &mut no_runtime);
        assert_eq!(pods.len(), 2);
        assert!(
            pods.iter()
                .all(|pod| pod.cni_calls.len() == 1 && pod.cni_add_ns == Some(1100 * MS))
        );
        assert_eq!(pods[1].timeline.add_start, Some(at(5000)));
        // Each ADD is its own namespace's: the one whose addresses came after it started.
        assert_eq!(
            pods.iter()
                .map(|pod| (pod.timeline.add_start, pod.timeline.first_tentative))
                .collect::<Vec<_>>(),
            [(Some(at(0)), Some(at(10))), (Some(at(5000)), Some(at(5010)))]
        );
        assert!(pods.iter().all(|pod| pod.dad_wait_ns == Some(1000 * MS)));
    }

    /// A name from `CNI_NETNS` is a file name: not empty, at most 255 bytes.
    #[test]
    fn a_namespace_name_from_the_call_is_a_file_name() {
        let name_of = |netns: String| {
            let mut add = call("ADD", 0, Some(40), Some(12));
            add.call.netns = Some(netns);
            let (pods, _) = build(&[], vec![add], 1, &mut no_runtime);
            pods[0].netns_name.clone()
        };
        assert_eq!(name_of("/run/netns/".into()), None);
        let longest = "n".repeat(255);
        assert_eq!(name_of(format!("/run/netns/{longest}")), Some(longest.clone()));
        assert_eq!(name_of(format!("/run/netns/{longest}n")), None);
    }

    /// Several addresses of one namespace (one cookie) are one pod.
    #[test]
    fn addresses_of_one_namespace_are_one_pod() {
        let mut first = event(10, 10, 1000, None, Outcome::Settled);
        first.netns_cookie = Some(7);
        let mut second = event(10, 20, 1500, None, Outcome::Settled);
        second.netns_cookie = Some(7);
        let (pods, _) = build(&[first, second], Vec::new(), 1, &mut no_runtime);
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_eq!(pods[0].dad_wait_ns, Some(1510 * MS), "10 ms → 1520 ms");
    }

    /// Each pod gets its own namespace's settings: by cookie when both know it, else by inode.
    #[test]
    fn settings_go_to_the_pod_of_their_namespace() {
        let mut first = event(10, 10, 1000, None, Outcome::Settled);
        first.netns_cookie = Some(1);
        let mut second = event(10, 5010, 1000, None, Outcome::Settled);
        second.netns_cookie = Some(2);
        let unknown = event(11, 20, 1000, None, Outcome::Settled);
        let (mut pods, _) = build(&[first, second, unknown], Vec::new(), 1, &mut no_runtime);
        let read = |why: &str| PodSettings::unread(why);
        let id = |inode, cookie| NetnsId { inode, cookie };
        attach_settings(
            &mut pods,
            vec![
                (id(11, 9), read("11")),
                (id(10, 2), read("10 second")),
                (id(10, 1), read("10 first")),
                (id(12, 0), read("no pod")),
            ],
        );
        let reasons: Vec<(u32, Option<String>)> = pods
            .iter()
            .map(|pod| (pod.netns_inode, pod.settings.as_ref().and_then(|s| s.unread.clone())))
            .collect();
        assert_eq!(
            reasons,
            [
                (10, Some("10 first".into())),
                (11, Some("11".into())),
                (10, Some("10 second".into()))
            ]
        );
        // A reading without a cookie goes to the first pod of its inode still without one.
        let (mut pods, _) = build(&[first_of(10, 1), first_of(10, 2)], Vec::new(), 1, &mut no_runtime);
        attach_settings(&mut pods, vec![(id(10, 0), read("a")), (id(10, 7), read("b"))]);
        assert_eq!(pods[0].settings.as_ref().and_then(|s| s.unread.as_deref()), Some("a"));
        assert_eq!(pods[1].settings, None, "cookie 7 is neither pod's");
    }

    fn first_of(inode: u32, cookie: u64) -> AddressEvent {
        let mut event = event(
            inode,
            i64::try_from(cookie).expect("small") * 5000,
            1000,
            None,
            Outcome::Settled,
        );
        event.netns_cookie = Some(cookie);
        event
    }
}
