//! One OTLP span from one thing dad-trace saw: `cni.add` (`cni.del`, ...) from a CNI call,
//! `ipv6.dad` from an address, with its socket errors as span events. Names from the
//! OpenTelemetry semantic conventions where one exists (`container.id`, `k8s.pod.name`,
//! `network.interface.name`, `process.pid`, `process.exit.code`, `error.type`); dad-trace's own
//! under `cni.`, `ipv6.dad.` and `socket.`. Values come from tenants and runtimes: each is
//! cut to [`VALUE_MAX`] bytes.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{
        Span, Status,
        span::{Event, Link, SpanKind},
        status::StatusCode,
    },
};

use crate::{
    record::cni::TracedCall,
    session::{AddressEvent, Outcome, Pod, SocketError, trace_context::TraceParent},
};

/// The longest attribute value sent, in bytes (longer ones are cut at a character boundary).
pub const VALUE_MAX: usize = 256;

/// Socket errors kept as events of one address's span; more are counted as dropped.
pub const EVENTS_MAX: usize = 16;

/// `Span.flags`: the W3C trace flags in the low byte (ours: sampled, 0x01), 0x100 "whether
/// the parent is remote is known", 0x200 "it is": our spans' with a parent in this process,
/// with a remote one (a runtime's), and what a link to a remote span adds to its flags.
const FLAGS_LOCAL_PARENT: u32 = 0x101;
const FLAGS_REMOTE_PARENT: u32 = 0x301;
const FLAGS_REMOTE: u32 = 0x300;

/// Where a span sits: its trace, its own id, and its parent's (none for a root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    /// The parent is the runtime's span, not one of ours.
    pub remote_parent: bool,
}

/// Nanoseconds since the epoch, as OTLP counts time (0 before 1970: never on a real clock).
#[must_use]
pub fn unix_nanos(time: DateTime<Utc>) -> u64 {
    time.timestamp_nanos_opt()
        .and_then(|nanos| u64::try_from(nanos).ok())
        .unwrap_or(0)
}

/// The span's name for a CNI command: `cni.add`, `cni.del`, ...; `cni.call` for a command the
/// spec does not have.
#[must_use]
pub fn call_name(command: Option<&str>) -> &'static str {
    match command {
        Some("ADD") => "cni.add",
        Some("DEL") => "cni.del",
        Some("CHECK") => "cni.check",
        Some("GC") => "cni.gc",
        Some("STATUS") => "cni.status",
        Some("VERSION") => "cni.version",
        _ => "cni.call",
    }
}

/// The span of a finished top-level CNI call; `end` stands in for a call still running.
#[must_use]
pub fn call_span(
    traced: &TracedCall,
    place: Place,
    trace_state: &str,
    link: Option<&TraceParent>,
    end: DateTime<Utc>,
) -> Span {
    let call = &traced.call;
    let mut attributes = vec![
        text("cni.plugin", call.plugin_name()),
        int("process.pid", call.pid.into()),
    ];
    optional_text(&mut attributes, "cni.command", call.command.as_deref());
    optional_text(&mut attributes, "container.id", call.container_id.as_deref());
    optional_text(&mut attributes, "cni.netns", call.netns.as_deref());
    optional_text(&mut attributes, "network.interface.name", call.ifname.as_deref());
    pod_attributes(&mut attributes, traced.pod.as_ref(), false);
    if let Some(code) = call.exit_status {
        attributes.push(int("process.exit.code", code.into()));
    }
    let status = match (call.exit_status, call.exit_signal, call.duration_ns) {
        (Some(0), _, _) => Status::default(),
        (Some(code), _, _) => error(format!("exit status {code}")),
        (_, Some(signal), _) => error(format!("killed by signal {signal}")),
        (_, _, None) => error("still running when the recording stopped".into()),
        _ => Status::default(),
    };
    let mut span = span(
        call_name(call.command.as_deref()),
        place,
        call.start,
        call.end().unwrap_or(end),
        attributes,
    );
    span.status = Some(status);
    trace_state.clone_into(&mut span.trace_state);
    span.links = link.map(link_to).into_iter().collect();
    span
}

/// The span of one address's tentative period, with the socket errors it caused as events
/// (`dropped` more were not kept).
#[must_use]
pub fn address_span(
    event: &AddressEvent,
    place: Place,
    errors: &[SocketError],
    dropped: u32,
    node: Option<&str>,
) -> Span {
    let mut attributes = vec![
        text("network.interface.name", &event.ifname),
        text("ipv6.address", &event.addr.to_string()),
        text("ipv6.dad.outcome", &event.outcome.to_string()),
        int_ns("ipv6.dad.tentative_ns", event.tentative_ns),
    ];
    for (key, value) in [
        ("ipv6.dad.dad_ns", event.dad_ns),
        ("ipv6.dad.link_wait_ns", event.link_wait_ns),
        ("ipv6.dad.delay_ns", event.delay_ns),
        ("ipv6.dad.probing_ns", event.probing_ns),
    ] {
        if let Some(value) = value {
            attributes.push(int_ns(key, value));
        }
    }
    if event.partial {
        attributes.push(flag("ipv6.dad.partial", true));
    }
    if event.optimistic {
        attributes.push(flag("ipv6.dad.optimistic", true));
    }
    if event.host_netns {
        attributes.push(flag("ipv6.dad.host_netns", true));
    }
    attributes.push(int("ipv6.dad.netns_inode", event.netns_inode.into()));
    optional_text(&mut attributes, "ipv6.dad.netns", event.netns_name.as_deref());
    // A root span carries the keys that find the runtime's spans of the same pod.
    if place.parent.is_none() {
        pod_attributes(&mut attributes, event.pod.as_ref(), true);
        optional_text(&mut attributes, "k8s.node.name", node);
    }
    let start = unix_nanos(event.time).saturating_sub(event.tentative_ns);
    let mut span = span_at("ipv6.dad", place, start, unix_nanos(event.time), attributes);
    if event.outcome == Outcome::Failed {
        span.status = Some(error("duplicate address detected".into()));
    }
    span.events = errors.iter().take(EVENTS_MAX).map(socket_event).collect();
    let excess = u32::try_from(errors.len().saturating_sub(EVENTS_MAX)).unwrap_or(u32::MAX);
    span.dropped_events_count = excess.saturating_add(dropped);
    span
}

/// A socket error as an event at its first failure.
fn socket_event(error: &SocketError) -> Event {
    let mut attributes = vec![
        text("socket.syscall", &error.syscall),
        text("error.type", &error.errno),
        int("socket.failures", i64::try_from(error.count).unwrap_or(i64::MAX)),
        int("process.pid", error.pid.into()),
        text("process.command", &error.comm),
    ];
    if let Some(addr) = error.addr {
        attributes.push(text("socket.address", &addr.to_string()));
    }
    optional_text(&mut attributes, "container.id", error.container_id.as_deref());
    Event {
        time_unix_nano: unix_nanos(error.time),
        name: "socket.error".into(),
        attributes,
        dropped_attributes_count: 0,
    }
}

/// The pod's names; `container.id` (the sandbox) only when asked, as a call has its own.
fn pod_attributes(attributes: &mut Vec<KeyValue>, pod: Option<&Pod>, container: bool) {
    let Some(pod) = pod else { return };
    optional_text(attributes, "k8s.namespace.name", pod.namespace.as_deref());
    optional_text(attributes, "k8s.pod.name", pod.name.as_deref());
    optional_text(attributes, "k8s.pod.uid", pod.uid.as_deref());
    if container {
        optional_text(attributes, "container.id", pod.container_id.as_deref());
    }
}

fn span(name: &str, place: Place, start: DateTime<Utc>, end: DateTime<Utc>, attributes: Vec<KeyValue>) -> Span {
    span_at(name, place, unix_nanos(start), unix_nanos(end), attributes)
}

fn span_at(name: &str, place: Place, start: u64, end: u64, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: place.trace_id.to_vec(),
        span_id: place.span_id.to_vec(),
        parent_span_id: place.parent.map(|parent| parent.to_vec()).unwrap_or_default(),
        flags: if place.remote_parent {
            FLAGS_REMOTE_PARENT
        } else {
            FLAGS_LOCAL_PARENT
        },
        name: name.into(),
        kind: SpanKind::Internal.into(),
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        attributes,
        ..Span::default()
    }
}

/// A link to a trace the caller did not sample (the span starts a trace of its own).
fn link_to(parent: &TraceParent) -> Link {
    Link {
        trace_id: parent.trace_id.to_vec(),
        span_id: parent.parent_id.to_vec(),
        flags: u32::from(parent.flags) | FLAGS_REMOTE,
        ..Link::default()
    }
}

fn error(message: String) -> Status {
    Status {
        message,
        code: StatusCode::Error.into(),
    }
}

/// `value` cut to at most [`VALUE_MAX`] bytes, at a character boundary.
#[must_use]
pub fn bounded(value: &str) -> &str {
    if value.len() <= VALUE_MAX {
        return value;
    }
    let end = (0..=VALUE_MAX)
        .rev()
        .find(|&at| value.is_char_boundary(at))
        .unwrap_or(0);
    &value[..end]
}

#[must_use]
pub fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(bounded(value).to_owned()))
}

fn optional_text(attributes: &mut Vec<KeyValue>, key: &str, value: Option<&str>) {
    if let Some(value) = value.filter(|value| !value.is_empty()) {
        attributes.push(text(key, value));
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, Value::IntValue(value))
}

fn int_ns(key: &str, value: u64) -> KeyValue {
    int(key, i64::try_from(value).unwrap_or(i64::MAX))
}

fn flag(key: &str, value: bool) -> KeyValue {
    attribute(key, Value::BoolValue(value))
}

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    // The receiver's reading of an attribute, as the export tests use it.
    pub use otlp_receiver::attribute as value;

    use super::*;

    /// A top-level `command` call of the pod in `/var/run/netns/<netns>`, `duration_ns` long.
    pub fn traced_call(command: &str, netns: &str, duration_ns: u64) -> TracedCall {
        TracedCall {
            call: crate::session::CniCall {
                command: Some(command.into()),
                plugin: "/opt/cni/bin/ptp".into(),
                container_id: Some(format!("cid-{netns}")),
                netns: Some(format!("/var/run/netns/{netns}")),
                ifname: Some("eth0".into()),
                pid: 10,
                ppid: 1,
                start: "2026-12-06T18:00:00Z".parse().expect("literal"),
                duration_ns: Some(duration_ns),
                exit_status: Some(0),
                exit_signal: None,
                env_truncated: false,
                trace_parent: None,
                trace_state: None,
                delegates: Vec::new(),
            },
            netns_inode: Some(4_026_532_500),
            pod: Some(Pod {
                namespace: Some("team-a".into()),
                name: Some(format!("web-{netns}")),
                ..Pod::default()
            }),
        }
    }

    /// `fd00:dad::1` on eth0 of namespace `netns`, settled after `tentative_ns`.
    pub fn event(netns: &str, tentative_ns: u64) -> AddressEvent {
        AddressEvent {
            time: "2026-12-06T18:00:02Z".parse().expect("literal"),
            netns_inode: 4_026_532_500,
            netns_cookie: None,
            netns_name: Some(netns.into()),
            host_netns: false,
            pod: None,
            ifname: "eth0".into(),
            ifindex: 2,
            peer: None,
            addr: "fd00:dad::1".parse().expect("literal"),
            tentative_ns,
            dad_ns: Some(tentative_ns),
            link_wait_ns: None,
            delay_ns: None,
            probing_ns: None,
            optimistic: false,
            outcome: Outcome::Settled,
            partial: false,
            node: None,
            duplicate_of: Vec::new(),
        }
    }

    const PLACE: Place = Place {
        trace_id: [7; 16],
        span_id: [2; 8],
        parent: Some([1; 8]),
        remote_parent: true,
    };

    fn traced(status: Option<i32>, signal: Option<i32>, duration_ns: Option<u64>) -> TracedCall {
        let mut traced = traced_call("ADD", "cni-1", 5_000_000);
        traced.call.exit_status = status;
        traced.call.exit_signal = signal;
        traced.call.duration_ns = duration_ns;
        traced
    }

    #[test]
    fn a_call_span_has_its_times_names_and_parent() {
        let traced = traced(Some(0), None, Some(5_000_000));
        let span = call_span(&traced, PLACE, "k=v", None, DateTime::<Utc>::MIN_UTC);
        assert_eq!(span.name, "cni.add");
        // Work inside the node, neither a server's nor a client's.
        assert_eq!(span.kind, i32::from(SpanKind::Internal));
        assert_eq!(
            (span.trace_id, span.span_id, span.parent_span_id),
            (vec![7; 16], vec![2; 8], vec![1; 8])
        );
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 5_000_000);
        assert_eq!(span.start_time_unix_nano, unix_nanos(traced.call.start));
        assert_eq!(span.flags, 0x301);
        assert_eq!(span.trace_state, "k=v");
        assert_eq!(span.status, Some(Status::default()));
        assert!(span.links.is_empty());
        for (key, expected) in [
            ("cni.plugin", "ptp"),
            ("cni.command", "ADD"),
            ("container.id", "cid-cni-1"),
            ("cni.netns", "/var/run/netns/cni-1"),
            ("network.interface.name", "eth0"),
            ("k8s.namespace.name", "team-a"),
            ("k8s.pod.name", "web-cni-1"),
            ("process.exit.code", "0"),
        ] {
            assert_eq!(value(&span.attributes, key).as_deref(), Some(expected), "{key}");
        }
    }

    #[test]
    fn a_call_that_failed_or_still_ran_is_an_error() {
        let end = DateTime::from_timestamp(2_000_000_000, 0).expect("time");
        for (traced, message) in [
            (traced(Some(1), None, Some(1)), "exit status 1"),
            (traced(None, Some(9), Some(1)), "killed by signal 9"),
            (traced(None, None, None), "still running when the recording stopped"),
        ] {
            let span = call_span(&traced, PLACE, "", None, end);
            let status = span.status.expect("status");
            assert_eq!(
                (status.code, status.message.as_str()),
                (i32::from(StatusCode::Error), message)
            );
            if traced.call.duration_ns.is_none() {
                assert_eq!(span.end_time_unix_nano, unix_nanos(end));
            }
        }
        assert_eq!(
            call_span(&traced(None, None, Some(1)), PLACE, "", None, end).status,
            Some(Status::default())
        );
    }

    #[test]
    fn an_unsampled_caller_is_linked_not_parent() {
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        let own = Place {
            parent: None,
            remote_parent: false,
            ..PLACE
        };
        let span = call_span(
            &traced(Some(0), None, Some(1)),
            own,
            "",
            Some(&parent),
            DateTime::<Utc>::MIN_UTC,
        );
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.flags, 0x101);
        let [link] = span.links.as_slice() else {
            panic!("one link")
        };
        assert_eq!(
            (link.trace_id.as_slice(), link.span_id.as_slice()),
            (&parent.trace_id[..], &parent.parent_id[..])
        );
        assert_eq!(link.flags, 0x300);
    }

    #[test]
    fn commands_are_named_as_the_spec_spells_them() {
        for (command, name) in [
            (Some("ADD"), "cni.add"),
            (Some("DEL"), "cni.del"),
            (Some("CHECK"), "cni.check"),
            (Some("GC"), "cni.gc"),
            (Some("STATUS"), "cni.status"),
            (Some("VERSION"), "cni.version"),
            (Some("add"), "cni.call"),
            (None, "cni.call"),
        ] {
            assert_eq!(call_name(command), name);
        }
    }

    fn phased() -> AddressEvent {
        let mut event = event("cni-1", 1_500_000_000);
        event.link_wait_ns = Some(1_000);
        event.delay_ns = Some(2_000);
        event.probing_ns = None;
        event
    }

    #[test]
    fn an_address_span_lasts_exactly_its_tentative_time() {
        let event = phased();
        let span = address_span(&event, PLACE, &[], 0, Some("node-1"));
        assert_eq!(span.name, "ipv6.dad");
        assert_eq!(span.end_time_unix_nano, unix_nanos(event.time));
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_500_000_000);
        assert_eq!(span.status, None);
        for (key, expected) in [
            ("network.interface.name", Some("eth0")),
            ("ipv6.address", Some("fd00:dad::1")),
            ("ipv6.dad.outcome", Some("settled")),
            ("ipv6.dad.tentative_ns", Some("1500000000")),
            ("ipv6.dad.link_wait_ns", Some("1000")),
            ("ipv6.dad.delay_ns", Some("2000")),
            ("ipv6.dad.probing_ns", None),
            ("ipv6.dad.partial", None),
            ("ipv6.dad.optimistic", None),
            ("ipv6.dad.host_netns", None),
            ("ipv6.dad.netns", Some("cni-1")),
            // A child: the pod's keys are on its parent.
            ("k8s.pod.name", None),
            ("k8s.node.name", None),
        ] {
            assert_eq!(value(&span.attributes, key).as_deref(), expected, "{key}");
        }
    }

    #[test]
    fn a_root_address_span_carries_the_join_keys_and_a_failure_is_an_error() {
        let mut event = phased();
        event.outcome = Outcome::Failed;
        (event.partial, event.optimistic, event.host_netns) = (true, true, true);
        event.pod = Some(Pod {
            namespace: Some("team-a".into()),
            name: Some("web-0".into()),
            uid: Some("u-1".into()),
            container_id: Some("sandbox-1".into()),
            ..Pod::default()
        });
        let root = Place { parent: None, ..PLACE };
        let span = address_span(&event, root, &[], 0, Some("node-1"));
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.status.expect("status").code, i32::from(StatusCode::Error));
        for (key, expected) in [
            ("k8s.namespace.name", "team-a"),
            ("k8s.pod.name", "web-0"),
            ("k8s.pod.uid", "u-1"),
            ("container.id", "sandbox-1"),
            ("k8s.node.name", "node-1"),
            ("ipv6.dad.partial", "true"),
            ("ipv6.dad.optimistic", "true"),
            ("ipv6.dad.host_netns", "true"),
        ] {
            assert_eq!(value(&span.attributes, key).as_deref(), Some(expected), "{key}");
        }
    }

    #[test]
    fn socket_errors_become_events_up_to_a_bound() {
        let mut error = crate::report::socket_errors::tests::error("cni-1", "bind", 12, Some(3));
        error.container_id = Some("app-1".into());
        let span = address_span(&phased(), PLACE, std::slice::from_ref(&error), 0, None);
        let [event] = span.events.as_slice() else {
            panic!("one event")
        };
        assert_eq!(
            (event.name.as_str(), event.time_unix_nano),
            ("socket.error", unix_nanos(error.time))
        );
        for (key, expected) in [
            ("socket.syscall", "bind"),
            ("error.type", "EADDRNOTAVAIL"),
            ("socket.failures", "12"),
            ("container.id", "app-1"),
        ] {
            assert_eq!(value(&event.attributes, key).as_deref(), Some(expected), "{key}");
        }
        assert_eq!(span.dropped_events_count, 0);
        let many = vec![error; EVENTS_MAX + 3];
        let span = address_span(&phased(), PLACE, &many, 2, None);
        assert_eq!((span.events.len(), span.dropped_events_count), (EVENTS_MAX, 5));
    }

    #[test]
    fn tenant_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(VALUE_MAX);
        let cut = bounded(&long);
        assert_eq!(cut.len(), VALUE_MAX);
        assert_eq!(bounded(&format!("a{long}")).len(), VALUE_MAX - 1);
        let exact = "x".repeat(VALUE_MAX);
        assert_eq!(bounded(&exact), exact);
        assert_eq!(value(&[text("k", &long)], "k").map(|v| v.len()), Some(VALUE_MAX));
    }

    #[test]
    fn time_before_the_epoch_is_zero() {
        assert_eq!(unix_nanos(DateTime::<Utc>::UNIX_EPOCH), 0);
        assert_eq!(unix_nanos(DateTime::<Utc>::MIN_UTC), 0);
        let later = DateTime::from_timestamp(1, 5).expect("time");
        assert_eq!(unix_nanos(later), 1_000_000_005);
    }
}
