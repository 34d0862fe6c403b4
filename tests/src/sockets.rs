//! Application socket errors against the real kernel: a pod's application binds (or
//! connects) while its address is tentative and counts its own failures; dad-trace's count
//! must be the same, exactly. Shared by the host tier (tracepoint backend) and the guests
//! (kprobe backend). Each scenario makes its own namespace, removed on drop.
use std::{
    io,
    net::{Ipv6Addr, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    time::{Duration, Instant},
};

use dad_trace::{
    kernel::BackendChoice,
    node::netns::in_netns,
    session::{Session, SocketError},
};

use crate::netns::{TestNetns, record_during};

/// The address every scenario gives its pod.
pub const POD_ADDR: &str = "fd00:5d::1";

/// How a scenario's application tries, and what it counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// `bind()` a new UDP socket to the pod's address, every `pause`, until it works.
    Bind { pause: Duration },
    /// The same on one socket, with no pause, at most `tries` times.
    SpinBind { tries: u64 },
    /// `bind()` with `IPV6_FREEBIND`: no need for the address to be usable yet.
    FreeBind,
    /// `connect()` a UDP socket to a neighbour on the pod's prefix, every `pause`.
    Connect { pause: Duration },
    /// What dad-trace must not take for a pod's failure: binds to an IPv4 address the pod
    /// lacks (`EADDRNOTAVAIL` too, but not IPv6), an IPv6 bind with a short address (`EINVAL`),
    /// then a child process that fails [`ODD_CHILD_BINDS`] binds to the tentative address and
    /// is gone before dad-trace reads its count. `failures` is the child's.
    OddInputs,
}

/// Binds the child of [`Attempt::OddInputs`] fails.
pub const ODD_CHILD_BINDS: u64 = 5;
/// IPv4 binds of [`Attempt::OddInputs`].
pub const ODD_IPV4_BINDS: u64 = 3;

/// What the application saw: its failures with `EADDRNOTAVAIL`, and whether it got there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub failures: u64,
    pub succeeded: bool,
}

/// How a scenario's pod namespace is set up before its interface exists (its `default`
/// sysctls, which `eth0` then takes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodDad {
    /// Kernel defaults: DAD runs, the address is tentative for about a second.
    Stock,
    /// DAD runs three probes a second apart: a longer window.
    Long,
    /// `accept_dad=0`: no DAD, never tentative.
    Off,
    /// `optimistic_dad=1` and `use_optimistic=1`: usable while tentative.
    Optimistic,
}

impl PodDad {
    fn sysctls(self) -> &'static [(&'static str, &'static str)] {
        match self {
            PodDad::Stock => &[],
            PodDad::Long => &[("dad_transmits", "3")],
            PodDad::Off => &[("accept_dad", "0")],
            PodDad::Optimistic => &[("optimistic_dad", "1"), ("use_optimistic", "1")],
        }
    }
}

fn retry(deadline: Instant, pause: Duration) -> bool {
    std::thread::sleep(pause);
    Instant::now() < deadline
}

fn is_unavailable(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}

/// An IPv6 socket address as the kernel reads it.
fn sockaddr6(addr: SocketAddrV6) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: addr.port().to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: addr.ip().octets(),
        },
        sin6_scope_id: 0,
    }
}

/// `bind(fd, addr)` through libc: std's `UdpSocket::bind` makes a new socket each time.
fn bind_raw(fd: i32, addr: SocketAddrV6) -> io::Result<()> {
    let sockaddr = sockaddr6(addr);
    // SAFETY: a valid socket address of the size given.
    let rc = unsafe {
        libc::bind(
            fd,
            (&raw const sockaddr).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Calls `call` until it works, at most `tries` times, `pause` apart (none: at once) and
/// not past `deadline`, counting its `EADDRNOTAVAIL` failures; any other error ends it.
fn count_failures(
    tries: u64,
    pause: Duration,
    deadline: Instant,
    mut call: impl FnMut() -> io::Result<()>,
) -> io::Result<Seen> {
    let mut seen = Seen::default();
    for _ in 0..tries {
        match call() {
            Ok(()) => {
                return Ok(Seen {
                    succeeded: true,
                    ..seen
                });
            }
            Err(e) if is_unavailable(&e) => seen.failures += 1,
            Err(e) => return Err(e),
        }
        if !pause.is_zero() && !retry(deadline, pause) {
            break;
        }
    }
    Ok(seen)
}

/// Runs `attempt` against the pod's address, in this thread's namespace.
fn run(attempt: Attempt) -> io::Result<Seen> {
    let addr: Ipv6Addr = POD_ADDR.parse().expect("literal");
    let deadline = Instant::now() + Duration::from_secs(10);
    let local = SocketAddrV6::new(addr, 0, 0, 0);
    match attempt {
        Attempt::Bind { pause } => count_failures(u64::MAX, pause, deadline, || UdpSocket::bind(local).map(drop)),
        Attempt::SpinBind { tries } => {
            let socket = new_udp()?;
            count_failures(tries, Duration::ZERO, deadline, || bind_raw(socket.as_raw_fd(), local))
        }
        Attempt::FreeBind => {
            let socket = new_udp()?;
            let one: libc::c_int = 1;
            // SAFETY: an int option of the size given, on a socket this function owns.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_FREEBIND,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            bind_raw(socket.as_raw_fd(), local)?;
            Ok(Seen {
                failures: 0,
                succeeded: true,
            })
        }
        Attempt::OddInputs => odd_inputs(addr),
        Attempt::Connect { pause } => {
            let neighbour = SocketAddrV6::new("fd00:5d::99".parse().expect("literal"), 53, 0, 0);
            count_failures(u64::MAX, pause, deadline, || new_udp()?.connect(neighbour))
        }
    }
}

fn odd_inputs(addr: Ipv6Addr) -> io::Result<Seen> {
    for _ in 0..ODD_IPV4_BINDS {
        match UdpSocket::bind("10.77.0.1:0") {
            Err(e) if is_unavailable(&e) => {}
            other => {
                return Err(io::Error::other(format!(
                    "an IPv4 bind to a missing address: {other:?}"
                )));
            }
        }
    }
    let socket = new_udp()?;
    let sockaddr = sockaddr6(SocketAddrV6::new(addr, 0, 0, 0));
    // SAFETY: a valid address, said to be shorter than it is.
    let rc = unsafe { libc::bind(socket.as_raw_fd(), (&raw const sockaddr).cast(), 20) };
    if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(io::Error::other("a short IPv6 address was not refused with EINVAL"));
    }
    // A child that fails and exits at once: only the kernel's count remembers it.
    // SAFETY: the child calls only async-signal-safe functions (socket, bind, _exit).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let mut failed = 0;
            for _ in 0..ODD_CHILD_BINDS {
                // SAFETY: plain syscalls on a fresh socket of this child.
                unsafe {
                    let fd = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0);
                    let size = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                    if libc::bind(fd, (&raw const sockaddr).cast(), size) != 0 {
                        failed += 1;
                    }
                    libc::close(fd);
                }
            }
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(failed) }
        }
        child => {
            let mut status = 0;
            // SAFETY: waits for the child this function made.
            if unsafe { libc::waitpid(child, &raw mut status, 0) } != child {
                return Err(io::Error::last_os_error());
            }
            Ok(Seen {
                failures: u64::try_from(libc::WEXITSTATUS(status)).unwrap_or_default(),
                succeeded: false,
            })
        }
    }
}

/// An unbound IPv6 UDP socket.
fn new_udp() -> io::Result<UdpSocket> {
    // SAFETY: plain socket creation; the fd is owned by the returned socket at once.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    Ok(unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Records while a pod (namespace `name`, its DAD set up as `dad`) gets [`POD_ADDR`] and its
/// application tries at once as `attempt`: the session, and what the application saw.
pub fn scenario(backend: BackendChoice, name: &str, dad: PodDad, attempt: Attempt) -> (Session, Seen) {
    let pod = TestNetns::new(name);
    if matches!(attempt, Attempt::Connect { .. }) {
        // Without ::1, the pod's address is the only source a connect can use.
        pod.ip(&["link", "set", "lo", "down"]);
    }
    let handle = Path::new("/run/netns").join(name);
    // No link-local address on eth0: the pod's address is its only one.
    let settings: Vec<_> = [("addr_gen_mode", "1")].iter().chain(dad.sysctls()).copied().collect();
    in_netns(&handle, move || {
        for (name, value) in settings {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/default/{name}"), value)?;
        }
        Ok(())
    })
    .expect("the pod's DAD settings");
    pod.veth(&format!("{name}-h"), None);
    let options = crate::faults::options(backend);
    let pod_name = name.to_string();
    let (session, seen) = record_during(options, Duration::from_millis(1500), move || {
        let address = format!("{POD_ADDR}/64");
        let mut add = vec!["-n", &pod_name, "-6", "addr", "add", &address, "dev", "eth0"];
        if dad == PodDad::Optimistic {
            // An address given by hand (as CNI plugins give theirs) is optimistic only when
            // asked for; the sysctls let the kernel honour it.
            add.push("optimistic");
        }
        crate::netns::ip(&add);
        in_netns(&Path::new("/run/netns").join(&pod_name), move || Ok(run(attempt)?)).expect("the application ran")
    });
    drop(pod);
    (session, seen)
}

/// The socket errors of the namespace `name` by this process.
#[must_use]
pub fn errors_of<'a>(session: &'a Session, name: &str) -> Vec<&'a SocketError> {
    session
        .socket_errors
        .iter()
        .filter(|error| error.netns_name.as_deref() == Some(name) && error.pid == std::process::id())
        .collect()
}

/// What every scenario where the application failed during DAD must show: one entry, the
/// application's own count, tied to the tentative address.
pub fn assert_counted_exactly(session: &Session, name: &str, syscall: &str, seen: Seen) {
    assert!(
        seen.failures > 0,
        "the application never failed: was {POD_ADDR} tentative?"
    );
    let errors = errors_of(session, name);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = errors[0];
    assert_eq!(error.syscall, syscall);
    assert_eq!(error.errno, "EADDRNOTAVAIL");
    assert_eq!(
        error.count, seen.failures,
        "dad-trace's count and the application's: {error:#?}"
    );
    assert!(
        error.tentative_for_ns.is_some(),
        "not tied to the tentative address: {error:#?}"
    );
    assert_eq!(error.tentative_addr, Some(POD_ADDR.parse().expect("literal")));
    assert!(error.last_ns >= error.first_ns);
    assert_eq!(session.lost_events, 0);
    let tracing = session.sockets.as_ref().expect("socket errors were traced");
    assert_eq!(tracing.lost, 0, "{tracing:?}");
}
