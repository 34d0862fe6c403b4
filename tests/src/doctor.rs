//! The doctor checked against the kernel: pods created under one setting, traced by the real
//! tracer, and every measured tentative delay compared with the doctor's estimate for it.
use std::{process::Command, sync::Arc, time::Duration};

use dad_trace::{
    kernel::BackendChoice,
    node::{
        doctor::{self, Diagnosis, Verdict, Wait},
        netns::{NETNS_DIR, addresses_in},
        sysctl::SysctlGuard,
    },
    record::enrich::cri::SocketChoice,
    session::{Outcome, Session},
    tracer::RecordOptions,
};
use tokio::sync::Notify;

/// Slack on top of the kernel's bounds: the DAD work runs on a workqueue, takes the RTNL lock
/// (which pod creation holds often), and timers are in jiffies.
pub const SLACK_BELOW_MS: f64 = 10.0;
pub const SLACK_ABOVE_MS: f64 = 250.0;

/// How one pod is set up beyond the plain veth + address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodSetup {
    Plain,
    /// `net.ipv6.conf.eth0.accept_dad=0` in the pod namespace before the interface comes up
    /// (what the bridge plugin does without `"enableDad": true`).
    InterfaceAcceptDadOff,
    /// The pod namespace's `all.forwarding=0` and `default.optimistic_dad=1` before the
    /// interface moves in: its link-local address is optimistic.
    NamespaceOptimistic,
    /// The pod address added with `nodad` (`IFA_F_NODAD`), as a CNI plugin may.
    NodadAddress,
    /// Set up by the real CNI bridge plugin without `"enableDad": true` (it sets `eth0
    /// accept_dad=0` in the pod namespace); its host side is a random `veth…` on a bridge.
    BridgePlugin,
}

/// The bridge plugin's network for [`PodSetup::BridgePlugin`].
const BRIDGE: &str = "dtdocbr0";
const BRIDGE_IPAM: &str = "/tmp/dtdoc-bridge-ipam";

fn bridge_config() -> String {
    serde_json::json!({
        "cniVersion": "0.4.0", "name": "dtdoc-bridge", "type": "bridge", "bridge": BRIDGE,
        "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "fd00:dad:d0b::/64"}]], "dataDir": BRIDGE_IPAM},
    })
    .to_string()
}

/// Whether the CNI bridge plugin is installed (Debian's containernetworking-plugins).
#[must_use]
pub fn bridge_plugin_installed() -> bool {
    std::path::Path::new(CNI_DIR).join("bridge").exists() && std::path::Path::new(CNI_DIR).join("host-local").exists()
}

const CNI_DIR: &str = "/usr/lib/cni";

fn bridge(command: &str, ns: &str) -> std::io::Result<std::process::Output> {
    use std::io::Write as _;
    let mut child = Command::new(std::path::Path::new(CNI_DIR).join("bridge"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", ns)
        .env("CNI_NETNS", std::path::Path::new(NETNS_DIR).join(ns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_DIR)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bridge_config().as_bytes())?;
    child.wait_with_output()
}

pub struct Case {
    /// Short: interface names are at most 15 bytes.
    pub tag: &'static str,
    pub host_sysctls: &'static [(&'static str, &'static str)],
    pub pods: usize,
    pub setup: fn(usize) -> PodSetup,
}

/// One measured address beside the doctor's estimate for it.
#[derive(Debug)]
pub struct Compared {
    pub what: String,
    pub measured_ms: f64,
    pub estimate: Wait,
}

pub struct Measured {
    pub diagnosis: Diagnosis,
    pub session: Session,
    /// Per address (pod link-local, pod address, host veth) and per pod.
    pub compared: Vec<Compared>,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn names(tag: &str, index: usize) -> (String, String) {
    (format!("dtdoc-{tag}-{index}"), format!("dtd{tag}h{index}"))
}

/// A pod as a CNI plugin makes one: veth pair, one end moved in and renamed, up, an address.
fn create_pod(tag: &str, index: usize, setup: PodSetup) {
    let (ns, host) = names(tag, index);
    let peer = format!("dtd{tag}p{index}");
    ip(&["netns", "add", &ns]);
    if setup == PodSetup::BridgePlugin {
        let output = bridge("ADD", &ns).expect("run the bridge plugin");
        assert!(
            output.status.success(),
            "bridge ADD {ns}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        return;
    }
    if setup == PodSetup::NamespaceOptimistic {
        ip(&["netns", "exec", &ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.optimistic_dad=1",
        ]);
    }
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", &peer, "netns", &ns]);
    ip(&["link", "set", &host, "up"]);
    ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"]);
    if setup == PodSetup::InterfaceAcceptDadOff {
        ip(&["netns", "exec", &ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"]);
    }
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "link", "set", "eth0", "up"]);
    let addr = format!("fd00:dad:d0c::{:x}/64", index + 1);
    let mut args = vec!["-n", ns.as_str(), "addr", "add", addr.as_str(), "dev", "eth0"];
    if setup == PodSetup::NodadAddress {
        args.push("nodad");
    }
    ip(&args);
}

/// Removes the case's pods (their host veths go with them), also after a failed assertion.
struct Pods {
    tag: &'static str,
    count: usize,
    setup: fn(usize) -> PodSetup,
}

impl Drop for Pods {
    fn drop(&mut self) {
        let mut bridged = false;
        for index in 0..self.count {
            let (ns, _) = names(self.tag, index);
            if (self.setup)(index) == PodSetup::BridgePlugin {
                // DEL first, so host-local releases the address.
                let _ = bridge("DEL", &ns);
                bridged = true;
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if bridged {
            let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
            let _ = std::fs::remove_dir_all(BRIDGE_IPAM);
        }
    }
}

/// Polls until no address of the case's pods is tentative (or 15 s pass).
fn wait_settled(tag: &str, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let tentative = (0..count).any(|index| {
            let path = std::path::Path::new(NETNS_DIR).join(names(tag, index).0);
            addresses_in(&path).map_or(true, |rows| {
                rows.len() < 2 || rows.iter().any(dad_trace::node::netns::Inet6Row::tentative)
            })
        });
        if !tentative {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_link_local(addr: std::net::Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// Sets the case's host sysctls (on top of stock DAD settings), traces its pods coming up,
/// asks the doctor while they are up, and pairs every measured delay with its estimate.
#[must_use]
pub fn measure(case: &Case) -> Measured {
    let mut sysctls: SysctlGuard = crate::stock_dad_settings();
    for (name, value) in case.host_sysctls {
        sysctls.set(name, value).expect("sysctl");
    }
    // The doctor's view before the pods exist: what a new pod gets.
    let before = doctor::diagnose(&doctor::audit(std::path::Path::new("/nonexistent")));
    let stop = Arc::new(Notify::new());
    let options = RecordOptions {
        backend: BackendChoice::Tracepoint,
        cri_socket: SocketChoice::Off,
        stop: Some(stop.clone()),
        ..RecordOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (tag, count, setup) = (case.tag, case.pods, case.setup);
    let (session, (pods, live)) = runtime.block_on(async {
        let workload = tokio::task::spawn_blocking(move || {
            // Let the recorder attach first: it reads the kernel's BTF and loads its programs,
            // and nothing tells this thread when it is done (a pod made earlier is missed).
            std::thread::sleep(Duration::from_secs(3));
            let pods = Pods { tag, count, setup };
            for index in 0..count {
                create_pod(tag, index, setup(index));
            }
            wait_settled(tag, count);
            let live = doctor::diagnose(&doctor::audit(std::path::Path::new(NETNS_DIR)));
            // The last events reach the recorder.
            std::thread::sleep(Duration::from_millis(500));
            (pods, live)
        });
        let (session, workload) = tokio::join!(dad_trace::tracer::record(options), async {
            let result = workload.await;
            stop.notify_one();
            result
        });
        (session.expect("record"), workload.expect("workload"))
    });
    assert_eq!(
        live.verdict, before.verdict,
        "the doctor changed its mind once pods existed"
    );
    let compared = compare(case, &before, &live, &session);
    drop(pods);
    drop(sysctls);
    Measured {
        diagnosis: live,
        session,
        compared,
    }
}

fn compare(case: &Case, before: &Diagnosis, live: &Diagnosis, session: &Session) -> Vec<Compared> {
    let mut compared = Vec::new();
    for index in 0..case.pods {
        let (ns, host) = names(case.tag, index);
        let estimate = live
            .namespaces
            .iter()
            .find(|estimate| estimate.name == ns)
            .unwrap_or_else(|| panic!("the doctor did not audit {ns}"));
        let eth0 = estimate
            .interfaces
            .iter()
            .find(|i| i.ifname == "eth0")
            .expect("eth0 audited");
        let events: Vec<_> = session
            .events
            .iter()
            .filter(|e| e.netns_name.as_deref() == Some(ns.as_str()))
            .collect();
        // A nodad address is never tentative (the kernel does not flag it): nothing to trace,
        // it waited 0 ms by construction.
        for (addr, wait) in &eth0.addresses {
            if !events.iter().any(|e| e.addr == *addr) {
                assert!(!wait.dad, "{ns} {addr} was not traced but the doctor says it runs DAD");
                compared.push(Compared {
                    what: format!("{ns} {addr} (never tentative)"),
                    measured_ms: 0.0,
                    estimate: *wait,
                });
            }
        }
        assert_eq!(eth0.addresses.len(), 2, "{ns}: {:?}", eth0.addresses);
        assert!(!events.is_empty(), "{ns}: no event of {}", session.events.len());
        for event in &events {
            assert_eq!(event.outcome, Outcome::Settled, "{event:?}");
            let (_, wait) = eth0
                .addresses
                .iter()
                .find(|(addr, _)| *addr == event.addr)
                .unwrap_or_else(|| panic!("{ns} {} not audited", event.addr));
            // Plain pods are new pods: the estimate made before they existed applies too.
            if (case.setup)(index) == PodSetup::Plain {
                let new_pod = if is_link_local(event.addr) {
                    before.new_pod.link_local
                } else {
                    before.new_pod.added_address
                };
                assert_eq!(*wait, new_pod, "{ns} {}: live vs new-pod estimate", event.addr);
            }
            compared.push(Compared {
                what: format!("{ns} {}", event.addr),
                measured_ms: event.tentative_ns as f64 / 1e6,
                estimate: *wait,
            });
        }
        // The bridge plugin names its host side itself (`veth…`): only ours are compared.
        if (case.setup)(index) != PodSetup::BridgePlugin {
            let host_side: Vec<_> = session
                .events
                .iter()
                .filter(|e| e.host_netns && e.ifname == host)
                .collect();
            assert_eq!(host_side.len(), 1, "{host}");
            compared.push(Compared {
                what: format!("host {host}"),
                measured_ms: host_side[0].tentative_ns as f64 / 1e6,
                estimate: before.host_veth,
            });
        }
        if (case.setup)(index) == PodSetup::Plain {
            let pod = dad_trace::report::pod_delays(&session.events)
                .into_iter()
                .find(|pod| pod.pod == ns)
                .unwrap_or_else(|| panic!("{ns} per-pod delay"));
            compared.push(Compared {
                what: format!("{ns} per pod"),
                measured_ms: pod.delay_ns as f64 / 1e6,
                estimate: before.new_pod.per_pod,
            });
        }
    }
    compared
}

impl Measured {
    /// Prints the comparison and fails on any delay outside its estimate; returns the
    /// measured range of the addresses whose estimate is `filter`.
    pub fn check(&self, expected: Verdict) {
        println!(
            "doctor: {:?}, new pod {:?}",
            self.diagnosis.verdict, self.diagnosis.new_pod
        );
        let mut bad = Vec::new();
        for c in &self.compared {
            let fits = c
                .estimate
                .admits(c.measured_ms, if c.estimate.dad { SLACK_ABOVE_MS } else { 50.0 })
                && c.measured_ms >= c.estimate.low_ms as f64 - SLACK_BELOW_MS;
            println!(
                "  {:<40} measured {:>8.1} ms  estimate {}{}",
                c.what,
                c.measured_ms,
                c.estimate,
                if fits { "" } else { "   <-- outside" }
            );
            if !fits {
                bad.push(&c.what);
            }
        }
        assert_eq!(self.diagnosis.verdict, expected, "{:#?}", self.diagnosis.findings);
        assert!(bad.is_empty(), "measured outside the doctor's estimate: {bad:?}");
        assert_eq!(self.session.lost_events, 0);
    }

    /// Measured min and max of the comparisons whose label contains `what`.
    #[must_use]
    pub fn range(&self, what: impl Fn(&Compared) -> bool) -> (f64, f64) {
        self.compared
            .iter()
            .filter(|c| what(c))
            .fold((f64::MAX, 0.0_f64), |(lo, hi), c| {
                (lo.min(c.measured_ms), hi.max(c.measured_ms))
            })
    }
}
