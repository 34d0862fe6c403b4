//! Test networks made with iproute2, in namespaces this process creates and deletes, and a
//! recorder that runs while a workload changes them.
use std::{
    net::Ipv6Addr,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use dad_trace::{
    node::netns::parse_if_inet6,
    session::{AddressEvent, Session},
    tracer::RecordOptions,
};
use tokio::sync::Notify;

/// Runs `ip` with `args`; panics with its output when it fails.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A named namespace (`ip netns add`), deleted on drop unless already gone.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    #[must_use]
    pub fn new(name: &str) -> Self {
        // A leftover of an earlier, killed run would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Self { name: name.into() }
    }

    /// `ip -n <this namespace> ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Adds `eth0` here, its peer `host_end` in `peer_ns` (or the host when `None`); both up.
    pub fn veth(&self, host_end: &str, peer_ns: Option<&str>) {
        let mut args = Vec::new();
        if let Some(ns) = peer_ns {
            args.extend_from_slice(&["-n", ns]);
        } else {
            let _ = Command::new("ip").args(["link", "del", host_end]).output();
        }
        args.extend_from_slice(&[
            "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", &self.name,
        ]);
        ip(&args);
        self.ip(&["link", "set", "eth0", "up"]);
        match peer_ns {
            Some(ns) => ip(&["-n", ns, "link", "set", host_end, "up"]),
            None => ip(&["link", "set", host_end, "up"]),
        }
    }

    /// The flags of `addr` here, if it exists.
    #[must_use]
    pub fn flags(&self, addr: Ipv6Addr) -> Option<u32> {
        let path = format!("/run/netns/{}", self.name);
        dad_trace::node::netns::in_netns(std::path::Path::new(&path), move || {
            Ok(
                parse_if_inet6(&std::fs::read_to_string("/proc/thread-self/net/if_inet6")?)
                    .into_iter()
                    .find(|row| row.addr == addr)
                    .map(|row| row.flags),
            )
        })
        .expect("read addresses")
    }

    /// Waits until `addr` is no longer tentative (or 10 s).
    pub fn wait_settled(&self, addr: Ipv6Addr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .flags(addr)
            .is_none_or(|flags| flags & dad_trace_common::IFA_F_TENTATIVE != 0)
        {
            assert!(Instant::now() < deadline, "{addr} in {} never settled", self.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn delete(self) {
        drop(self);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Records while `workload` runs, and for `after` more; returns the session and what the
/// workload returned.
pub fn record_during<T: Send + 'static>(
    options: RecordOptions,
    after: Duration,
    workload: impl FnOnce() -> T + Send + 'static,
) -> (Session, T) {
    let (session, result, ()) = record_during_then(options, after, workload, || ());
    (session, result)
}

/// The same, and what `before_stop` returns, called after `after` with the recorder (and
/// its programs) still attached.
pub fn record_during_then<T: Send + 'static, R: Send + 'static>(
    mut options: RecordOptions,
    after: Duration,
    workload: impl FnOnce() -> T + Send + 'static,
    before_stop: impl FnOnce() -> R + Send + 'static,
) -> (Session, T, R) {
    let stop = Arc::new(Notify::new());
    options.stop = Some(stop.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let work = async move {
            let result = tokio::task::spawn_blocking(workload).await.expect("workload");
            tokio::time::sleep(after).await;
            let last = before_stop();
            stop.notify_one();
            (result, last)
        };
        // The recorder is polled first: it attaches before the workload starts.
        let (session, (result, last)) = tokio::join!(dad_trace::tracer::record(options), work);
        (session.expect("record"), result, last)
    })
}

/// The events of `addr` in the namespace called `netns`, in order.
#[must_use]
pub fn events_of<'a>(session: &'a Session, netns: &str, addr: Ipv6Addr) -> Vec<&'a AddressEvent> {
    session
        .events
        .iter()
        .filter(|event| event.addr == addr && event.netns_name.as_deref() == Some(netns))
        .collect()
}
