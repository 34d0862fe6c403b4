//! Puts each span in its trace. A CNI call's span is a child of the runtime's span when the
//! plugin's environment carried a sampled `TRACEPARENT`, else the root of a new trace. A pod's
//! address is a child of the ADD call that made its namespace's interface: the two finish in
//! either order (plugins wait for DAD, so the address usually finishes first), so an address
//! waits up to [`HOLD`] for its call, and becomes a root span after that.
//!
//! Everything held is bounded: a node where pods churn, or a tenant that spins on `bind`,
//! cannot grow it.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{
    collections::{HashMap, VecDeque},
    net::Ipv6Addr,
    time::Duration,
};

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::trace::v1::Span;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use super::spans::{EVENTS_MAX, Place, address_span, call_span};
use crate::{
    record::cni::TracedCall,
    session::{AddressEvent, SocketError, trace_context::TraceParent},
};

/// How long a pod's finished address waits for its ADD call to finish.
pub const HOLD: Duration = Duration::from_secs(10);
/// How long an ADD call stays a parent for its namespace's addresses after it finished.
pub const PARENT_TTL: Duration = Duration::from_mins(5);
/// ADD calls, held addresses and socket errors (by address) kept at once, each.
pub const HELD_MAX: usize = 4096;

/// A finished ADD call, parent of its namespace's addresses.
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Parent {
    /// An address created while the call ran is the call's (a namespace inode, reused by a
    /// later pod, is not).
    fn adopts(&self, event: &AddressEvent) -> bool {
        let started = event.started();
        self.start <= started && started <= self.end
    }
}

/// An address that finished before its pod's call, with its socket errors.
struct Held {
    event: AddressEvent,
    errors: Errors,
    until: DateTime<Utc>,
}

/// The socket errors one tentative address caused: at most `EVENTS_MAX` kept.
#[derive(Default)]
struct Errors {
    kept: Vec<SocketError>,
    dropped: u32,
}

/// Turns calls, addresses and socket errors into spans, each in its trace.
pub struct Joiner {
    ids: StdRng,
    node: Option<String>,
    /// By namespace inode.
    parents: HashMap<u32, Parent>,
    held: VecDeque<Held>,
    /// Socket errors by the tentative address that caused them, until that address finishes.
    errors: HashMap<(u32, Ipv6Addr), Errors>,
}

impl Joiner {
    /// `node` names the node on root spans; `ids` makes trace and span ids (seeded from the
    /// system in use, fixed in tests).
    #[must_use]
    pub fn new(node: Option<String>, ids: StdRng) -> Self {
        Self {
            ids,
            node,
            parents: HashMap::new(),
            held: VecDeque::new(),
            errors: HashMap::new(),
        }
    }

    /// A joiner with ids from the operating system's generator.
    #[must_use]
    pub fn seeded(node: Option<String>) -> Self {
        Self::new(node, StdRng::from_os_rng())
    }

    /// A finished (or, at the end, unfinished: `now` ends it) top-level call: its span, and
    /// the spans of the addresses that waited for it.
    pub fn call(&mut self, traced: &TracedCall, now: DateTime<Utc>) -> Vec<Span> {
        let call = &traced.call;
        let caller = call.trace_parent.filter(TraceParent::sampled);
        let unsampled = call.trace_parent.filter(|parent| !parent.sampled());
        let place = Place {
            trace_id: caller.map_or_else(|| self.ids.random(), |parent| parent.trace_id),
            span_id: self.span_id(),
            parent: caller.map(|parent| parent.parent_id),
            remote_parent: caller.is_some(),
        };
        let trace_state = caller.and(call.trace_state.as_deref()).unwrap_or_default();
        let end = call.end().unwrap_or(now);
        let mut spans = vec![call_span(traced, place, trace_state, unsampled.as_ref(), now)];
        let Some(netns) = traced.netns_inode.filter(|_| call.is("ADD")) else {
            return spans;
        };
        let parent = Parent {
            trace_id: place.trace_id,
            span_id: place.span_id,
            start: call.start,
            end,
        };
        let (adopted, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|held| held.event.netns_inode == netns && parent.adopts(&held.event));
        self.held = kept.into();
        for held in adopted {
            spans.push(self.child(&held.event, &parent, &held.errors));
        }
        if self.parents.len() >= HELD_MAX && !self.parents.contains_key(&netns) {
            self.forget_oldest_parent();
        }
        self.parents.insert(netns, parent);
        spans
    }

    /// A finished address: its span now when its call is known (or it has none), else later.
    pub fn address(&mut self, event: AddressEvent, now: DateTime<Utc>) -> Vec<Span> {
        let errors = self.errors.remove(&(event.netns_inode, event.addr)).unwrap_or_default();
        // The host's side of a veth (and the node's own interfaces) has no CNI call of its own.
        if event.host_netns {
            return vec![self.root(&event, &errors)];
        }
        if let Some(parent) = self
            .parents
            .get(&event.netns_inode)
            .filter(|parent| parent.adopts(&event))
        {
            let parent = Parent { ..*parent };
            return vec![self.child(&event, &parent, &errors)];
        }
        let mut spans = Vec::new();
        if self.held.len() >= HELD_MAX
            && let Some(oldest) = self.held.pop_front()
        {
            spans.push(self.root(&oldest.event, &oldest.errors));
        }
        let until = now + HOLD;
        self.held.push_back(Held { event, errors, until });
        spans
    }

    /// A socket error while an address was tentative becomes an event of that address's
    /// span; one that no tentative address explains belongs to no span.
    pub fn socket_error(&mut self, error: &SocketError) {
        let Some(addr) = error.tentative_addr.filter(|_| error.during_dad()) else {
            return;
        };
        let key = (error.netns_inode, addr);
        if self.errors.len() >= HELD_MAX && !self.errors.contains_key(&key) {
            return;
        }
        let errors = self.errors.entry(key).or_default();
        let same =
            |kept: &&mut SocketError| kept.pid == error.pid && kept.syscall == error.syscall && kept.addr == error.addr;
        if let Some(kept) = errors.kept.iter_mut().find(same) {
            kept.clone_from(error);
        } else if errors.kept.len() < EVENTS_MAX {
            errors.kept.push(error.clone());
        } else {
            errors.dropped = errors.dropped.saturating_add(1);
        }
    }

    /// Once a second: addresses that waited long enough become root spans, and calls long
    /// finished stop being parents.
    pub fn sweep(&mut self, now: DateTime<Utc>) -> Vec<Span> {
        let ttl = chrono::Duration::from_std(PARENT_TTL).unwrap_or(chrono::Duration::MAX);
        self.parents.retain(|_, parent| parent.end + ttl > now);
        let mut spans = Vec::new();
        while self.held.front().is_some_and(|held| held.until <= now) {
            if let Some(held) = self.held.pop_front() {
                spans.push(self.root(&held.event, &held.errors));
            }
        }
        spans
    }

    /// The recording ended: every address still waiting becomes a root span.
    pub fn close(&mut self) -> Vec<Span> {
        let held: Vec<Held> = self.held.drain(..).collect();
        held.iter().map(|held| self.root(&held.event, &held.errors)).collect()
    }

    /// Addresses waiting for their call.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn child(&mut self, event: &AddressEvent, parent: &Parent, errors: &Errors) -> Span {
        let place = Place {
            trace_id: parent.trace_id,
            span_id: self.span_id(),
            parent: Some(parent.span_id),
            remote_parent: false,
        };
        address_span(event, place, &errors.kept, errors.dropped, self.node.as_deref())
    }

    fn root(&mut self, event: &AddressEvent, errors: &Errors) -> Span {
        let place = Place {
            trace_id: self.ids.random(),
            span_id: self.span_id(),
            parent: None,
            remote_parent: false,
        };
        address_span(event, place, &errors.kept, errors.dropped, self.node.as_deref())
    }

    /// A span id that is not all zeros (which means "none").
    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = self.ids.random();
            if id != [0; 8] {
                return id;
            }
        }
    }

    fn forget_oldest_parent(&mut self) {
        if let Some(&oldest) = self
            .parents
            .iter()
            .min_by_key(|(_, parent)| parent.end)
            .map(|(netns, _)| netns)
        {
            self.parents.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::otlp::spans::tests::value;

    const T0: i64 = 1_800_000_000;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(T0 * 1000 + ms).expect("time")
    }

    fn joiner() -> Joiner {
        Joiner::new(Some("node-1".into()), StdRng::seed_from_u64(7))
    }

    /// An ADD call of netns `inode` from `start` to `end` ms.
    fn add(inode: u32, start: i64, end: i64) -> TracedCall {
        let mut traced = crate::output::otlp::spans::tests::traced_call("ADD", "cni-1", 0);
        traced.netns_inode = Some(inode);
        traced.call.start = at(start);
        traced.call.duration_ns = Some(u64::try_from((end - start) * 1_000_000).expect("positive"));
        traced
    }

    /// An address of netns `inode` tentative from `start` to `end` ms.
    fn address(inode: u32, start: i64, end: i64) -> AddressEvent {
        let mut event = crate::output::otlp::spans::tests::event("cni-1", 0);
        event.netns_inode = inode;
        event.time = at(end);
        event.tentative_ns = u64::try_from((end - start) * 1_000_000).expect("positive");
        event
    }

    fn parent_of(child: &Span, parent: &Span) -> bool {
        child.trace_id == parent.trace_id && child.parent_span_id == parent.span_id
    }

    #[test]
    fn an_address_finished_before_its_call_waits_and_becomes_its_child() {
        let mut joiner = joiner();
        assert!(joiner.address(address(5, 100, 1800), at(1800)).is_empty());
        assert_eq!(joiner.held(), 1);
        let spans = joiner.call(&add(5, 0, 1900), at(1900));
        let [call, child] = spans.as_slice() else {
            panic!("{spans:?}")
        };
        assert_eq!(call.name, "cni.add");
        assert!(call.parent_span_id.is_empty());
        assert!(parent_of(child, call));
        assert_eq!(joiner.held(), 0);
        // An address finishing after its call is its child at once.
        let [late] = joiner
            .address(address(5, 1000, 2500), at(2500))
            .try_into()
            .expect("one span");
        assert!(parent_of(&late, call));
        assert_ne!(late.span_id, child.span_id);
    }

    #[test]
    fn a_caller_s_sampled_traceparent_is_the_call_s_parent() {
        let mut joiner = joiner();
        let mut traced = add(5, 0, 100);
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        traced.call.trace_parent = Some(parent);
        traced.call.trace_state = Some("k=v".into());
        let [call] = joiner.call(&traced, at(100)).try_into().expect("one span");
        assert_eq!(
            (call.trace_id.as_slice(), call.parent_span_id.as_slice()),
            (&parent.trace_id[..], &parent.parent_id[..])
        );
        assert_eq!(call.trace_state, "k=v");
        assert!(call.links.is_empty());
        // Unsampled: a trace of our own, linked to the caller's.
        traced.call.trace_parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let [call] = joiner.call(&traced, at(100)).try_into().expect("one span");
        assert_ne!(call.trace_id.as_slice(), &parent.trace_id[..]);
        assert!(call.parent_span_id.is_empty());
        assert_eq!((call.links.len(), call.trace_state.as_str()), (1, ""));
    }

    #[test]
    fn addresses_outside_the_call_or_of_another_namespace_are_not_its_children() {
        let mut joiner = joiner();
        joiner.call(&add(5, 1000, 2000), at(2000));
        // Created before the call began, after it ended, in another namespace, on the host.
        let mut host = address(5, 1500, 2100);
        host.host_netns = true;
        for event in [
            address(5, 900, 2100),
            address(5, 2001, 2100),
            address(6, 1500, 2100),
            host,
        ] {
            let host_side = event.host_netns;
            let spans = joiner.address(event, at(2100));
            if host_side {
                let [root] = spans.as_slice() else {
                    panic!("a root at once")
                };
                assert!(root.parent_span_id.is_empty());
                assert_eq!(value(&root.attributes, "k8s.node.name").as_deref(), Some("node-1"));
            } else {
                assert!(spans.is_empty());
            }
        }
        assert_eq!(joiner.held(), 3);
        // At the edges of the call it is still the call's.
        for (start, end) in [(1000, 3000), (2000, 3000)] {
            let [child] = joiner
                .address(address(5, start, end), at(3000))
                .try_into()
                .expect("one");
            assert!(!child.parent_span_id.is_empty(), "{start}");
        }
    }

    #[test]
    fn a_call_adopts_only_held_addresses_of_its_namespace_and_time() {
        let mut joiner = joiner();
        // Held before the call arrives: another namespace in its time, its namespace before it.
        assert!(joiner.address(address(6, 1500, 1800), at(1800)).is_empty());
        assert!(joiner.address(address(5, 900, 1800), at(1800)).is_empty());
        let spans = joiner.call(&add(5, 1000, 2000), at(2000));
        assert_eq!(spans.len(), 1, "the call alone: {spans:?}");
        assert_eq!(joiner.held(), 2);
    }

    #[test]
    fn held_addresses_become_roots_after_the_hold_or_at_close() {
        let mut joiner = joiner();
        joiner.address(address(5, 0, 100), at(100));
        joiner.address(address(6, 0, 5000), at(5000));
        let hold = i64::try_from(HOLD.as_millis()).expect("ms");
        assert!(joiner.sweep(at(100 + hold - 1)).is_empty());
        let [root] = joiner.sweep(at(100 + hold)).try_into().expect("one root");
        assert!(root.parent_span_id.is_empty());
        assert_eq!(joiner.held(), 1);
        let [last] = joiner.close().try_into().expect("one root");
        assert_eq!(value(&last.attributes, "ipv6.dad.netns_inode").as_deref(), Some("6"));
        assert_eq!(joiner.held(), 0);
        assert!(joiner.close().is_empty());
    }

    #[test]
    fn a_call_stops_being_a_parent_after_its_ttl() {
        let mut joiner = joiner();
        joiner.call(&add(5, 0, 1000), at(1000));
        let ttl = i64::try_from(PARENT_TTL.as_millis()).expect("ms");
        joiner.sweep(at(1000 + ttl - 1));
        assert_eq!(joiner.address(address(5, 500, 1000 + ttl), at(1000 + ttl)).len(), 1);
        joiner.sweep(at(1000 + ttl));
        assert!(joiner.address(address(5, 500, 1000 + ttl), at(1000 + ttl)).is_empty());
    }

    #[test]
    fn only_add_calls_with_a_namespace_are_parents() {
        let mut joiner = joiner();
        let mut del = add(5, 0, 1000);
        del.call.command = Some("DEL".into());
        let [span] = joiner.call(&del, at(1000)).try_into().expect("one span");
        assert_eq!(span.name, "cni.del");
        let mut no_netns = add(6, 0, 1000);
        no_netns.netns_inode = None;
        joiner.call(&no_netns, at(1000));
        assert!(joiner.address(address(5, 10, 900), at(1000)).is_empty());
        assert!(joiner.address(address(6, 10, 900), at(1000)).is_empty());
    }

    #[test]
    fn socket_errors_of_a_tentative_address_go_on_its_span() {
        let mut joiner = joiner();
        let mut error = crate::report::socket_errors::tests::error("cni-1", "bind", 3, Some(1));
        error.netns_inode = 5;
        error.tentative_addr = Some("fd00:dad::1".parse().expect("addr"));
        joiner.socket_error(&error);
        // Counted again: the same entry, with the latest count.
        error.count = 9;
        joiner.socket_error(&error);
        let mut connect = error.clone();
        connect.syscall = "connect".into();
        connect.count = 3;
        joiner.socket_error(&connect);
        // Not DAD's doing: on no span.
        let mut other = error.clone();
        other.tentative_for_ns = None;
        other.pid = 99;
        joiner.socket_error(&other);
        let [root] = joiner
            .address(address(5, 0, 100), at(100))
            .into_iter()
            .chain(joiner.close())
            .collect::<Vec<_>>()
            .try_into()
            .expect("one");
        let failures: Vec<_> = root
            .events
            .iter()
            .map(|e| value(&e.attributes, "socket.failures"))
            .collect();
        assert_eq!(failures, [Some("9".into()), Some("3".into())]);
        let next = joiner
            .address(address(5, 200, 300), at(300))
            .into_iter()
            .chain(joiner.close())
            .next()
            .expect("span");
        assert!(next.events.is_empty(), "the errors went with the first span");
    }

    #[test]
    fn what_is_held_is_bounded() {
        let mut joiner = joiner();
        for inode in 0..u32::try_from(HELD_MAX).expect("fits") {
            assert!(joiner.address(address(inode + 10, 0, 100), at(100)).is_empty());
        }
        let [evicted] = joiner
            .address(address(1, 0, 100), at(100))
            .try_into()
            .expect("the oldest goes");
        assert_eq!(
            value(&evicted.attributes, "ipv6.dad.netns_inode").as_deref(),
            Some("10")
        );
        assert_eq!(joiner.held(), HELD_MAX);
        for inode in 0..=u32::try_from(HELD_MAX).expect("fits") {
            joiner.call(
                &add(inode + 100_000, i64::from(inode), i64::from(inode) + 1),
                at(i64::from(inode) + 1),
            );
        }
        assert_eq!(joiner.parents.len(), HELD_MAX);
        assert!(!joiner.parents.contains_key(&100_000), "the oldest call was forgotten");
        let mut error = crate::report::socket_errors::tests::error("cni-1", "bind", 1, Some(1));
        for inode in 0..=u32::try_from(HELD_MAX).expect("fits") {
            error.netns_inode = inode;
            error.tentative_addr = Some("fd00::1".parse().expect("addr"));
            joiner.socket_error(&error);
        }
        assert_eq!(joiner.errors.len(), HELD_MAX);
        error.netns_inode = 0;
        for pid in 0..40 {
            error.pid = pid;
            joiner.socket_error(&error);
        }
        let kept = &joiner.errors[&(0, "fd00::1".parse().expect("addr"))];
        assert_eq!(
            (kept.kept.len(), kept.dropped),
            (EVENTS_MAX, 40 + 1 - u32::try_from(EVENTS_MAX).expect("small"))
        );
    }
}
