//! `dad-trace record`: attach a backend, follow addresses through DAD, save the session.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use nix::time::{ClockId, clock_gettime};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::Notify,
};

use crate::{
    cri::{Identities, SocketChoice},
    enrich::{Enricher, Inet6Row, Presence, merge_identity, presence},
    events::NetnsId,
    loader::{self, LostCounter, Reading},
    metrics::Metrics,
    offsets::{VMLINUX_BTF, kernel_facts},
    probes::{Backend, DAD_WORK_FN, KernelSupport},
    report,
    session::{AddressEvent, Session, Unfinished},
    synthetic::{self, SyntheticPod},
    track::{Finished, Tracker},
};

/// Which backend `record` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// kprobe when it attaches, else tracepoint.
    Auto,
    Kprobe,
    Tracepoint,
}

pub struct RecordOptions {
    pub backend: BackendChoice,
    pub duration: Option<Duration>,
    pub count: Option<usize>,
    pub output: Option<PathBuf>,
    pub synthetic_pods: Option<usize>,
    pub synthetic_prefix: String,
    pub ring_bytes: u32,
    pub verbose: bool,
    /// An in-flight address unseen this long is checked for existence.
    pub stale_after: Duration,
    /// Print one line per finished address.
    pub lines: bool,
    /// Stops the recording when notified (for callers that drive a workload meanwhile).
    pub stop: Option<Arc<Notify>>,
    /// The container runtime socket that names pods (CRI).
    pub cri_socket: SocketChoice,
    /// How long a finished address of an unnamed pod waits for the runtime to name it.
    pub resolve_wait: Duration,
    /// Serve Prometheus metrics of every finished address (`serve`).
    pub serve: Option<ServeOptions>,
    /// Keep every event for the session file (a long-running agent without a file does not).
    pub keep_events: bool,
    /// The kernel's BTF (type information), for kernels that do not publish it themselves.
    pub btf: PathBuf,
    /// This program, to parse the BTF in a short-lived child (see [`kernel_facts`]).
    pub facts_helper: Option<PathBuf>,
}

impl Default for RecordOptions {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            duration: None,
            count: None,
            output: None,
            synthetic_pods: None,
            synthetic_prefix: "dt-pod-".into(),
            ring_bytes: dad_trace_common::DEFAULT_RING_BYTES,
            verbose: false,
            stale_after: Duration::from_secs(3),
            lines: false,
            stop: None,
            cri_socket: SocketChoice::Auto,
            resolve_wait: Duration::from_secs(10),
            serve: None,
            keep_events: true,
            btf: VMLINUX_BTF.into(),
            facts_helper: None,
        }
    }
}

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";
/// Capabilities from include/uapi/linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Holds SIGINT and SIGTERM pending from the start of `main` (call it before any thread
/// exists; threads inherit the mask) until [`release_signals`], so a signal that arrives
/// before the handlers are installed still ends in a saved session instead of killing.
pub fn hold_signals() {
    let signals = stop_signals();
    if let Err(e) = signals.thread_block() {
        log::debug!("cannot hold signals: {e}");
    }
}

/// Lets held signals through to the handlers installed by now.
pub fn release_signals() {
    if let Err(e) = stop_signals().thread_unblock() {
        log::debug!("cannot release signals: {e}");
    }
}

fn stop_signals() -> nix::sys::signal::SigSet {
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals
}

/// The process may not load tracing programs (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrivilegeError(pub String);

/// This kernel lacks what tracing needs (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedKernel(pub String);

/// Refuses early, with what to do, when the process cannot load tracing programs.
pub fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(PrivilegeError(
        "dad-trace needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8): \
         run it with sudo, or in a pod with those capabilities (see README, Privileges)"
            .into(),
    )
    .into())
}

fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// Maps kernel timestamps (`CLOCK_MONOTONIC`) to wall-clock time.
#[derive(Clone, Copy)]
struct Clock {
    wall_at_zero: DateTime<Utc>,
}

impl Clock {
    fn now() -> Self {
        let mono = monotonic_ns();
        let wall = Utc::now();
        Self {
            wall_at_zero: wall - chrono::Duration::nanoseconds(i64::try_from(mono).unwrap_or(0)),
        }
    }

    fn wall(self, mono_ns: u64) -> DateTime<Utc> {
        self.wall_at_zero + chrono::Duration::nanoseconds(i64::try_from(mono_ns).unwrap_or(0))
    }
}

/// This process's peak resident set (`VmHWM`), 0 where /proc does not say.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(|_| "unknown".into(), |u| u.release().to_string_lossy().into_owned())
}

fn hostname() -> String {
    nix::unistd::gethostname().map_or_else(|_| "unknown".into(), |h| h.to_string_lossy().into_owned())
}

/// A loaded and attached backend.
struct Attached {
    ebpf: aya::Ebpf,
    backend: Backend,
}

fn attach_backend(choice: BackendChoice, opts: &RecordOptions) -> anyhow::Result<Attached> {
    let facts = kernel_facts(&opts.btf, opts.facts_helper.as_deref())?;
    let support = KernelSupport::read_with(Path::new("/proc/kallsyms"), Path::new(KPROBE_PMU), facts.functions)
        .context("read /proc/kallsyms")?;
    let dad_work = match support.symbols.get(DAD_WORK_FN) {
        None => {
            return Err(UnsupportedKernel(format!(
                "{DAD_WORK_FN} is not in /proc/kallsyms: is IPv6 built in or loaded (modprobe ipv6)?"
            ))
            .into());
        }
        Some(0) => {
            return Err(PrivilegeError(format!(
                "/proc/kallsyms hides addresses from this process ({DAD_WORK_FN} reads 0): dad-trace needs \
                 CAP_SYSLOG (root has it; in a pod, add it to the capabilities)"
            ))
            .into());
        }
        Some(&address) => address,
    };
    let config = dad_trace_common::Config {
        dad_work_fn: dad_work,
        ..facts.config
    };
    let candidates: &[Backend] = match choice {
        BackendChoice::Auto => &[Backend::Kprobe, Backend::Tracepoint],
        BackendChoice::Kprobe => &[Backend::Kprobe],
        BackendChoice::Tracepoint => &[Backend::Tracepoint],
    };
    let mut failures = Vec::new();
    for &backend in candidates {
        let plan = support.plan(backend);
        if !plan.usable() {
            failures.push(format!(
                "{backend}: cannot observe {:?} on this kernel (see `dad-trace probes`)",
                plan.unobservable
            ));
            continue;
        }
        let mut ebpf = loader::load(&config, opts.ring_bytes, opts.verbose)?;
        match loader::attach(&mut ebpf, &plan) {
            Ok(()) => {
                for phase in &plan.unobservable {
                    log::warn!("{backend} backend cannot observe phase '{phase}' on this kernel");
                }
                return Ok(Attached { ebpf, backend });
            }
            Err(e) => failures.push(format!("{backend}: {:#}", anyhow::Error::from(e))),
        }
    }
    Err(UnsupportedKernel(format!(
        "no backend could attach:\n  {}\nRun `dad-trace probes` to see what this kernel offers",
        failures.join("\n  ")
    ))
    .into())
}

/// Turns a finished address into a session event with everything userspace knows.
fn to_event(finished: &Finished, clock: Clock, enricher: &mut Enricher) -> AddressEvent {
    let obs = &finished.last;
    let info = enricher.netns(obs.netns.inode);
    let host = enricher.is_host(obs.netns.inode);
    let peer = if finished.outcome == crate::track::Outcome::Aborted {
        None
    } else {
        enricher.peer(obs.netns, obs.ifindex)
    };
    let duplicate_of = if finished.outcome == crate::track::Outcome::Failed {
        enricher.holders(obs.addr, obs.netns.inode)
    } else {
        Vec::new()
    };
    AddressEvent {
        time: clock.wall(finished.end_ns),
        netns_inode: obs.netns.inode,
        netns_cookie: (obs.netns.cookie != 0).then_some(obs.netns.cookie),
        netns_name: info.name,
        host_netns: host,
        pod: info.pod,
        ifname: obs.ifname.clone(),
        ifindex: obs.ifindex,
        peer,
        addr: obs.addr,
        tentative_ns: finished.tentative_ns(),
        dad_ns: finished.dad_ns(),
        outcome: finished.outcome,
        partial: finished.partial,
        node: None,
        duplicate_of,
    }
}

/// When synthetic pods are traced, the run is done once every pod's link-local and global
/// address and every host-side veth's link-local address has finished.
struct SyntheticProgress {
    pending: HashSet<(String, bool)>,
}

fn link_local(addr: std::net::Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

impl SyntheticProgress {
    fn new(pods: &[SyntheticPod]) -> Self {
        let mut pending = HashSet::new();
        for pod in pods {
            pending.insert((pod.name.clone(), true));
            pending.insert((pod.name.clone(), false));
            pending.insert((pod.host_veth.clone(), true));
        }
        Self { pending }
    }

    fn see(&mut self, event: &AddressEvent) {
        let owner = if event.host_netns {
            Some(&event.ifname)
        } else {
            event.netns_name.as_ref()
        };
        if let Some(owner) = owner {
            self.pending.remove(&(owner.clone(), link_local(event.addr)));
        }
    }

    fn done(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Where and how `serve` exposes metrics.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    pub listen: std::net::SocketAddr,
    pub per_pod_labels: bool,
}

/// The consumer side of a recording: phase tracking, enrichment, the growing session.
struct Recorder {
    tracker: Tracker,
    enricher: Enricher,
    session: Session,
    progress: Option<SyntheticProgress>,
    clock: Clock,
    lines: bool,
    undecodable: u64,
    /// Finished addresses of pods the runtime has not named yet, since when.
    held: VecDeque<(Instant, AddressEvent)>,
    resolve_wait: Duration,
    metrics: Option<Arc<Metrics>>,
    keep_events: bool,
    /// Finished addresses, whether or not kept.
    finished: usize,
}

impl Recorder {
    fn on_reading(&mut self, reading: Reading) {
        match reading {
            Reading::Observation(obs) => {
                log::trace!("{obs}");
                tokio::task::block_in_place(|| self.enricher.note(obs.netns.inode));
                if let Some(finished) = self.tracker.observe(&obs) {
                    self.finish(&finished);
                }
            }
            Reading::Undecodable(e) => {
                self.undecodable += 1;
                log::warn!("{e}");
            }
        }
    }

    fn finish(&mut self, finished: &Finished) {
        let event = tokio::task::block_in_place(|| to_event(finished, self.clock, &mut self.enricher));
        let unnamed = !event.host_netns && event.pod.as_ref().is_none_or(|pod| pod.name.is_none());
        if self.enricher.uses_cri() && unnamed {
            self.held.push_back((Instant::now(), event));
        } else {
            self.commit(event);
        }
    }

    /// Gives held addresses the names the runtime knows by now; past `resolve_wait` (or at
    /// the end, `all`) they go on unnamed.
    fn release_held(&mut self, all: bool) {
        let mut waiting = VecDeque::new();
        while let Some((since, mut event)) = self.held.pop_front() {
            if let Some(identity) = self.enricher.sandbox(event.netns_inode) {
                merge_identity(&mut event.pod, identity);
                self.commit(event);
            } else if all || since.elapsed() >= self.resolve_wait {
                self.commit(event);
            } else {
                waiting.push_back((since, event));
            }
        }
        self.held = waiting;
    }

    fn commit(&mut self, event: AddressEvent) {
        self.finished += 1;
        if let Some(metrics) = &self.metrics {
            metrics.observe(&event);
        }
        if self.lines {
            println!("{}", report::event_line(&event));
        }
        if let Some(progress) = self.progress.as_mut() {
            progress.see(&event);
        }
        if self.keep_events {
            self.session.events.push(event);
        }
    }

    /// Ends the session: addresses still tentative are listed, not lost.
    fn into_session(mut self, lost_events: u64) -> Session {
        self.release_held(true);
        // Named late is still named: the runtime may list a sandbox only after its CNI ADD.
        for event in &mut self.session.events {
            if !event.host_netns
                && event.pod.as_ref().is_none_or(|pod| pod.name.is_none())
                && let Some(identity) = self.enricher.sandbox(event.netns_inode)
            {
                merge_identity(&mut event.pod, identity);
            }
        }
        let now = monotonic_ns();
        self.session.ended_at = Utc::now();
        self.session.sysctls_end = crate::sysctl::snapshot();
        self.session.lost_events = lost_events;
        self.session.unfinished = self
            .tracker
            .drain()
            .into_iter()
            .map(|entry| Unfinished {
                netns_inode: entry.first.netns.inode,
                ifname: entry.first.ifname.clone(),
                addr: entry.first.addr,
                tentative_so_far_ns: now.saturating_sub(entry.start_ns),
            })
            .collect();
        self.session
    }

    /// The tracepoint backend cannot see a DAD work item cancelled (address, interface or
    /// namespace deleted): addresses silent for too long are checked in their namespace.
    fn sweep(&mut self, stale_ns: u64, lost_events: u64) {
        self.release_held(false);
        if let Some(metrics) = &self.metrics {
            metrics.set_lost(lost_events);
            metrics.set_in_flight(self.tracker.in_flight().count());
        }
        let now = monotonic_ns();
        // Events queued before a death was noticed arrive within moments; a minute is plenty.
        self.tracker.prune(now.saturating_sub(60_000_000_000));
        let stale: Vec<_> = self
            .tracker
            .in_flight()
            .filter(|entry| now.saturating_sub(entry.last_seen_ns) > stale_ns)
            .map(|entry| entry.first.clone())
            .collect();
        // One look per namespace, however many of its addresses went silent.
        let mut rows: HashMap<NetnsId, Option<Vec<Inet6Row>>> = HashMap::new();
        for first in stale {
            let in_netns = rows
                .entry(first.netns)
                .or_insert_with(|| tokio::task::block_in_place(|| self.enricher.addresses(first.netns)));
            match presence(in_netns.as_deref(), first.ifindex, first.addr) {
                Presence::Tentative => {}
                Presence::Gone => {
                    if let Some(finished) = self.tracker.abort(first.ifa, now) {
                        self.finish(&finished);
                    }
                }
                Presence::Settled => {
                    log::warn!("{} on {} settled unseen (events lost?)", first.addr, first.ifname);
                    self.tracker.abort(first.ifa, now);
                }
            }
        }
    }
}

/// Stops a background task with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Creates the synthetic pods; returns whether a signal asked to stop meanwhile. On a signal
/// it still waits for the creator, so the pods it made are removed on drop.
async fn create_synthetic_pods(
    count: usize,
    prefix: &str,
    interrupt: &mut Signal,
    terminate: &mut Signal,
) -> anyhow::Result<(Vec<SyntheticPod>, bool)> {
    let owned_prefix = prefix.to_string();
    let creation = tokio::task::spawn_blocking(move || synthetic::create_pods(&owned_prefix, count));
    tokio::pin!(creation);
    let (pods, stop) = tokio::select! {
        pods = &mut creation => (pods??, false),
        _ = interrupt.recv() => (creation.await??, true),
        _ = terminate.recv() => (creation.await??, true),
    };
    eprintln!(
        "Created {count} synthetic pods ({prefix}0..{}).",
        count.saturating_sub(1)
    );
    Ok((pods, stop))
}

/// The metrics endpoint of `serve`, when asked for.
async fn start_metrics(
    serve: Option<ServeOptions>,
    backend: Backend,
) -> anyhow::Result<(Option<Arc<Metrics>>, Option<AbortOnDrop>)> {
    let Some(serve) = serve else {
        return Ok((None, None));
    };
    let metrics = Arc::new(Metrics::new(
        &backend.to_string(),
        &kernel_release(),
        serve.per_pod_labels,
    ));
    let server = crate::metrics::serve(serve.listen, metrics.clone()).await?;
    eprintln!("Serving Prometheus metrics on http://{}/metrics", serve.listen);
    Ok((Some(metrics), Some(AbortOnDrop(server))))
}

/// The enricher, naming pods through the runtime when a CRI socket is in reach.
async fn start_enricher(opts: &RecordOptions) -> anyhow::Result<(Enricher, Option<AbortOnDrop>)> {
    let enricher = Enricher::new(Path::new("/proc"), Path::new(synthetic::NETNS_DIR))?;
    // Synthetic pods are named by their namespace; no runtime knows them.
    let choice = if opts.synthetic_pods.is_some() && opts.cri_socket == SocketChoice::Auto {
        SocketChoice::Off
    } else {
        opts.cri_socket.clone()
    };
    let Some(socket) = choice.resolve().map_err(|e| anyhow::anyhow!(e))? else {
        return Ok((enricher, None));
    };
    let sandboxes = Identities::check(&socket)
        .await
        .context("naming pods through the runtime (use --cri-socket none to go without)")?;
    eprintln!(
        "Naming pods through the CRI at {} ({sandboxes} sandboxes now).",
        socket.display()
    );
    let identities = Identities::default();
    let refresher = AbortOnDrop(identities.spawn_refresher(socket, "/proc".into()));
    Ok((enricher.with_cri(identities), Some(refresher)))
}

/// Records until stopped (Ctrl-C, SIGTERM, `--duration`, `--count`, all synthetic pods
/// settled, or `stop`), then saves the session if asked.
pub async fn record(opts: RecordOptions) -> anyhow::Result<Session> {
    check_privileges()?;
    // First thing: a signal during start-up must still end in a saved session and no leftovers.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    release_signals();
    // Kernels since 5.11 charge BPF memory to the cgroup; the old limit only matters before.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } != 0 {
        log::debug!("setrlimit(RLIMIT_MEMLOCK) failed: {}", std::io::Error::last_os_error());
    }
    let Attached { mut ebpf, backend } = attach_backend(opts.backend, &opts)?;
    loader::start_kernel_logs(&mut ebpf);
    let lost = LostCounter::take(&mut ebpf)?;
    let mut readings = loader::spawn_reader(&mut ebpf, 4096)?;
    let (metrics, _server) = start_metrics(opts.serve, backend).await?;
    let (enricher, _refresher) = start_enricher(&opts).await?;
    let clock = Clock::now();
    let mut session = Session::new(backend, kernel_release(), hostname(), Utc::now());
    session.sysctls_start = crate::sysctl::snapshot();
    eprintln!(
        "Tracing IPv6 DAD with the {backend} backend on kernel {}. {}",
        session.kernel_release,
        if opts.duration.is_some() || opts.count.is_some() || opts.synthetic_pods.is_some() {
            "Ctrl-C stops early."
        } else {
            "Ctrl-C to stop."
        }
    );

    let (pods, mut stop) = match opts.synthetic_pods {
        Some(count) => create_synthetic_pods(count, &opts.synthetic_prefix, &mut interrupt, &mut terminate).await?,
        None => (Vec::new(), false),
    };
    let mut recorder = Recorder {
        tracker: Tracker::default(),
        enricher,
        session,
        progress: (!pods.is_empty()).then(|| SyntheticProgress::new(&pods)),
        clock,
        lines: opts.lines,
        undecodable: 0,
        held: VecDeque::new(),
        resolve_wait: opts.resolve_wait,
        metrics,
        keep_events: opts.keep_events,
        finished: 0,
    };
    let synthetic_deadline = tokio::time::sleep(Duration::from_mins(1));
    tokio::pin!(synthetic_deadline);
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let stale_ns = u64::try_from(opts.stale_after.as_nanos()).unwrap_or(u64::MAX);
    let mut failure = None;
    let external_stop = opts.stop.clone().unwrap_or_default();

    while !stop {
        tokio::select! {
            reading = readings.recv() => if let Some(reading) = reading { recorder.on_reading(reading) } else {
                failure = Some(anyhow::anyhow!("the ring buffer reader stopped"));
                break;
            },
            _ = sweep.tick() => recorder.sweep(stale_ns, lost.total()),
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            () = &mut deadline => break,
            () = external_stop.notified(), if opts.stop.is_some() => break,
            () = &mut synthetic_deadline, if recorder.progress.is_some() => {
                eprintln!("Synthetic pods did not all settle within 60 s; stopping.");
                break;
            }
        }
        stop = opts.count.is_some_and(|count| recorder.finished >= count)
            || recorder.progress.as_ref().is_some_and(SyntheticProgress::done);
    }
    // Whatever the kernel already sent still counts: give the reader a moment, then drain.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(reading) = readings.try_recv() {
        recorder.on_reading(reading);
    }

    let undecodable = recorder.undecodable;
    let session = recorder.into_session(lost.total());
    if undecodable > 0 {
        log::warn!("{undecodable} ring buffer records could not be decoded");
    }
    drop(ebpf);
    drop(pods);
    if let Some(path) = &opts.output {
        session.save(path)?;
        eprintln!("Session saved to {}", path.display());
    }
    log::debug!("peak resident memory: {} KiB", peak_rss_kib());
    failure.map_or(Ok(session), Err)
}
